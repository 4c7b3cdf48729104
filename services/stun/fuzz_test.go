package stun

import (
	"net/netip"
	"testing"

	pionstun "github.com/pion/stun/v3"
)

// FuzzParseBindingResponse: responses come from the network.
func FuzzParseBindingResponse(f *testing.F) {
	tid := [pionstun.TransactionIDSize]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}
	f.Add(bindingSuccess(tid, netip.MustParseAddrPort("192.0.2.1:3478")))
	f.Add(bindingSuccess(tid, netip.MustParseAddrPort("[2001:db8::1]:9")))
	f.Add(pionstun.MustBuild(pionstun.NewTransactionIDSetter(tid), pionstun.BindingError, pionstun.CodeBadRequest).Raw)
	f.Add(pionstun.MustBuild(pionstun.NewTransactionIDSetter(tid), pionstun.BindingSuccess).Raw)
	f.Add([]byte("hello"))
	f.Fuzz(func(t *testing.T, b []byte) {
		addr, ok, err := parseBindingResponse(b, tid)
		if !ok && (err != nil || addr.IsValid()) {
			t.Fatalf("not ours, yet %v, %v", addr, err)
		}
		if ok && err == nil && (!addr.IsValid() || addr.Port() == 0 || addr.Addr().Is4In6()) {
			t.Fatalf("accepted bad address %v", addr)
		}
	})
}
