package cli

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/pc2/pc2/services/gateway/namesapi"
)

func init() {
	register("name", "claim, release or show a name through a gateway's names API", runName)
}

const nameUsage = `usage:
  pc2 name claim   --key FILE [--invite CODE] [--api URL] [--ca-file PEM] NAME
  pc2 name release --key FILE [--api URL] [--ca-file PEM] NAME
  pc2 name show    [--api URL] [--ca-file PEM] NAME
NAME is a full name such as alice.ela.city; the API is https://<its domain>
unless --api names another base URL (the request's Host is still the domain).`

func runName(ctx context.Context, env Env, args []string) error {
	if len(args) == 0 {
		return usageErr("%s", nameUsage)
	}
	verb, args := args[0], args[1:]
	fs := newFlagSet("name "+verb, env)
	keyFile := fs.String("key", "", "the DID's key `file` (PKCS#8 PEM)")
	invite := fs.String("invite", "", "invite `code`, when the operator's policy asks for one")
	api := fs.String("api", "", "names API base `URL` (default https://<domain>)")
	caFile := fs.String("ca-file", "", "trust the CA certificates in this PEM `file` (besides the system's)")
	rest, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(rest) != 1 {
		return usageErr("%s", nameUsage)
	}
	name := strings.ToLower(strings.TrimSuffix(rest[0], "."))
	c := &namesapi.Client{API: *api}
	if *caFile != "" {
		pem, err := os.ReadFile(*caFile)
		if err != nil {
			return err
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("--ca-file %s: no PEM certificates in it", *caFile)
		}
		_, domain, _ := strings.Cut(name, ".")
		c.HTTP = &http.Client{Timeout: 30 * time.Second,
			Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: domain}}}
	}
	var v any
	switch verb {
	case "claim", "release":
		if *keyFile == "" {
			return usageErr("pc2 name %s needs --key\n%s", verb, nameUsage)
		}
		key, _, err := loadKeyID(*keyFile)
		if err != nil {
			return err
		}
		if verb == "claim" {
			v, err = c.Claim(ctx, key, name, *invite)
		} else {
			v, err = c.Release(ctx, key, name)
		}
		if err != nil {
			return fmt.Errorf("%s %s: %w", verb, name, err)
		}
	case "show":
		ni, err := c.Lookup(ctx, name)
		if err != nil {
			return fmt.Errorf("show %s: %w", name, err)
		}
		v = ni
	default:
		return usageErr("unknown name command %q\n%s", verb, nameUsage)
	}
	enc := json.NewEncoder(env.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
