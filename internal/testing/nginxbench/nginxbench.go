// Package nginxbench runs nginx (Debian's package), the reverse proxy
// the benchmarks compare the gateway with: a process of its own on
// loopback, with keep-alive upstream connections.
package nginxbench

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/pc2/pc2/internal/testing/proc"
	"github.com/pc2/pc2/internal/testing/testenv"
)

// ReverseProxy runs nginx (Debian's package) until the end of tb as a reverse
// proxy to upstream with keep-alive upstream connections, and returns its
// address. With certFile and keyFile it serves HTTPS with them.
func ReverseProxy(b testing.TB, upstream, certFile, keyFile string) string {
	b.Helper()
	bin, err := exec.LookPath("nginx")
	if err != nil {
		if bin, err = exec.LookPath("/usr/sbin/nginx"); err != nil {
			testenv.SkipOrFail(b, "no nginx (apt-get install nginx): %v", err)
		}
	}
	dir := b.TempDir()
	addr := proc.FreeAddr(b) // nginx takes the port from its config
	listen := "listen " + addr + ";"
	if certFile != "" {
		// TLS 1.3 as on the other paths: nginx 1.22's default protocols
		// stop at TLS 1.2.
		listen = fmt.Sprintf("listen %s ssl;\n\t\tssl_protocols TLSv1.2 TLSv1.3;\n\t\tssl_certificate %s;\n\t\tssl_certificate_key %s;", addr, certFile, keyFile)
	}
	conf := fmt.Sprintf(`daemon off;
worker_processes auto;
pid %[1]s/nginx.pid;
error_log stderr warn;
events { worker_connections 8192; }
http {
	access_log off;
	client_body_temp_path %[1]s/body;
	proxy_temp_path %[1]s/proxy;
	fastcgi_temp_path %[1]s/fastcgi;
	uwsgi_temp_path %[1]s/uwsgi;
	scgi_temp_path %[1]s/scgi;
	upstream node {
		server %[2]s;
		keepalive 32;
	}
	server {
		%[3]s
		location / {
			proxy_pass http://node;
			proxy_http_version 1.1;
			proxy_set_header Connection "";
			proxy_set_header Host $host;
			proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
			proxy_set_header X-Forwarded-Proto $scheme;
		}
	}
}
`, dir, upstream, listen)
	file := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(file, []byte(conf), 0o644); err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(bin, "-p", dir, "-c", file, "-e", "stderr")
	var out proc.TailBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = proc.SysProcAttr()
	if err := cmd.Start(); err != nil {
		b.Fatalf("start nginx: %v", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	b.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGQUIT) // graceful: the workers go too
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		if b.Failed() {
			b.Logf("nginx output:\n%s", out.String())
		}
	})
	for end := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		select {
		case <-exited:
			b.Fatalf("nginx exited:\n%s", out.String())
		default:
		}
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return addr
		}
		if time.Now().After(end) {
			b.Fatalf("nginx not listening on %s after 10 s:\n%s", addr, out.String())
		}
	}
}
