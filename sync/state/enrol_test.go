package state

import (
	"crypto/ed25519"
	"errors"
	"testing"
)

func TestEnrolRequestCheck(t *testing.T) {
	pub, key, _ := ed25519.GenerateKey(nil)
	ok := EnrolRequest{Token: "opt_x", PublicKey: pub, Signature: ed25519.Sign(key, EnrolMessage("opt_x", pub)), Arch: "arm64"}
	if err := ok.Check(); err != nil {
		t.Fatal(err)
	}
	other, _, _ := ed25519.GenerateKey(nil)
	for name, r := range map[string]EnrolRequest{
		"other token":  {Token: "opt_y", PublicKey: pub, Signature: ok.Signature, Arch: "arm64"},
		"other key":    {Token: "opt_x", PublicKey: other, Signature: ok.Signature, Arch: "arm64"},
		"no token":     {PublicKey: pub, Signature: ok.Signature, Arch: "arm64"},
		"short key":    {Token: "opt_x", PublicKey: pub[:8], Signature: ok.Signature, Arch: "arm64"},
		"no arch":      {Token: "opt_x", PublicKey: pub, Signature: ok.Signature},
		"no signature": {Token: "opt_x", PublicKey: pub, Arch: "arm64"},
	} {
		if err := r.Check(); !errors.Is(err, ErrDocument) {
			t.Errorf("%s: %v, want ErrDocument", name, err)
		}
	}
}
