package flash

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/outpost-edge/outpost/firmware/bundle"
)

func makeBundle(t *testing.T, arch string) (string, ed25519.PublicKey) {
	t.Helper()
	pub, key, _ := ed25519.GenerateKey(nil)
	dir := t.TempDir()
	bin := filepath.Join(dir, "agent")
	cfg := filepath.Join(dir, "agent.yaml")
	os.WriteFile(bin, bytes.Repeat([]byte("agent "), 1000), 0o755)
	os.WriteFile(cfg, []byte("device: {}\n"), 0o644)
	m := bundle.Manifest{AgentVersion: "1.0.0", Arch: arch, Accelerator: "cpu", Files: []bundle.File{
		{Path: "opt/outpost/bin/outpost-agent", Mode: 0o755, Source: bin},
		{Path: "etc/outpost/agent.yaml", Mode: 0o644, Source: cfg},
		{Path: bundle.UnitPath, Mode: 0o644, Source: cfg},
	}}
	out := filepath.Join(dir, "b.bundle")
	f, _ := os.Create(out)
	if err := bundle.Write(f, m, key); err != nil {
		t.Fatal(err)
	}
	f.Close()
	return out, pub
}

func TestFlashDirectoryIsIdempotent(t *testing.T) {
	b, pub := makeBundle(t, "arm64")
	root := t.TempDir()
	var progress bytes.Buffer
	o := Options{Bundle: b, Trusted: []ed25519.PublicKey{pub}, Target: root, Token: "opt_abc", Device: "pump-1", Progress: &progress}
	res, err := Flash(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if res.Written != 6 || res.Unchanged != 0 {
		t.Fatalf("first flash %+v, want 6 written", res)
	}
	if !strings.Contains(progress.String(), "verified 100%") {
		t.Fatalf("no progress shown:\n%s", progress.String())
	}
	if fi, err := os.Stat(filepath.Join(root, "opt/outpost/bin/outpost-agent")); err != nil || fi.Mode().Perm() != 0o755 {
		t.Fatalf("agent binary: %v %v", fi, err)
	}
	if tok, _ := os.ReadFile(filepath.Join(root, bundle.TokenPath)); string(tok) != "opt_abc\n" {
		t.Fatalf("token file %q", tok)
	}
	if fi, _ := os.Stat(filepath.Join(root, bundle.TokenPath)); fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file mode %v", fi.Mode())
	}
	if env, _ := os.ReadFile(filepath.Join(root, bundle.DeviceEnv)); string(env) != "OUTPOST_AGENT_DEVICE_ID=pump-1\n" {
		t.Fatalf("device env %q", env)
	}
	if dst, err := os.Readlink(filepath.Join(root, bundle.UnitWants)); err != nil || dst != "/"+bundle.UnitPath {
		t.Fatalf("unit not enabled: %q %v", dst, err)
	}
	res, err = Flash(context.Background(), o)
	if err != nil || res.Written != 0 || res.Unchanged != 6 {
		t.Fatalf("second flash %+v %v, want nothing written", res, err)
	}
}

func TestFlashRefuses(t *testing.T) {
	b, pub := makeBundle(t, "arm64")
	t.Run("a wrong-architecture root", func(t *testing.T) {
		// An arm64 root (the cross libc's loader stands in for its /usr/bin/env)
		// and an amd64 bundle.
		root := t.TempDir()
		os.MkdirAll(filepath.Join(root, "usr/bin"), 0o755)
		arm64ELF, err := os.ReadFile("/usr/aarch64-linux-gnu/lib/ld-linux-aarch64.so.1")
		if err != nil {
			t.Fatalf("libc6-dev-arm64-cross not installed; run `make deps`: %v", err)
		}
		os.WriteFile(filepath.Join(root, "usr/bin/env"), arm64ELF, 0o755)
		bx, pubx := makeBundle(t, "amd64")
		_, err = Flash(context.Background(), Options{Bundle: bx, Trusted: []ed25519.PublicKey{pubx}, Target: root})
		if !errors.Is(err, ErrWrongArch) || !strings.Contains(err.Error(), "aarch64") {
			t.Fatalf("got %v, want ErrWrongArch naming aarch64", err)
		}
		if _, err := os.Stat(filepath.Join(root, "opt")); err == nil {
			t.Fatal("files written into a wrong-architecture root")
		}
	})
	t.Run("a root flashed for another architecture", func(t *testing.T) {
		root := t.TempDir()
		b7, pub7 := makeBundle(t, "armv7")
		if _, err := Flash(context.Background(), Options{Bundle: b7, Trusted: []ed25519.PublicKey{pub7}, Target: root}); err != nil {
			t.Fatal(err)
		}
		if _, err := Flash(context.Background(), Options{Bundle: b, Trusted: []ed25519.PublicKey{pub}, Target: root}); !errors.Is(err, ErrWrongArch) {
			t.Fatalf("got %v, want ErrWrongArch", err)
		}
	})
	t.Run("a tampered bundle, before writing anything", func(t *testing.T) {
		data, _ := os.ReadFile(b)
		data[len(data)/2] ^= 0xff
		bad := filepath.Join(t.TempDir(), "bad.bundle")
		os.WriteFile(bad, data, 0o644)
		root := t.TempDir()
		_, err := Flash(context.Background(), Options{Bundle: bad, Trusted: []ed25519.PublicKey{pub}, Target: root})
		if err == nil || !strings.Contains(err.Error(), "refusing") {
			t.Fatalf("tampered bundle: %v", err)
		}
		if entries, _ := os.ReadDir(root); len(entries) != 0 {
			t.Fatalf("tampered bundle wrote %d entries", len(entries))
		}
	})
	t.Run("an untrusted signer", func(t *testing.T) {
		other, _, _ := ed25519.GenerateKey(nil)
		_, err := Flash(context.Background(), Options{Bundle: b, Trusted: []ed25519.PublicKey{other}, Target: t.TempDir()})
		if !errors.Is(err, bundle.ErrSignature) {
			t.Fatalf("got %v, want ErrSignature", err)
		}
	})
}

func TestFlashImage(t *testing.T) {
	for _, tool := range []string{"mke2fs", "debugfs"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not installed; run `make deps`", tool)
		}
	}
	b, pub := makeBundle(t, "arm64")
	img := filepath.Join(t.TempDir(), "card.img")
	o := Options{Bundle: b, Trusted: []ed25519.PublicKey{pub}, Target: img, Token: "opt_first"}
	if _, err := Flash(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	cat := func(p string) string {
		out, err := exec.Command("debugfs", "-R", "cat /"+p, img).Output()
		if err != nil {
			t.Fatal(err)
		}
		return string(out)
	}
	if got := cat(bundle.TokenPath); got != "opt_first\n" {
		t.Fatalf("token in image %q", got)
	}
	stat, _ := exec.Command("debugfs", "-R", "stat /opt/outpost/bin/outpost-agent", img).Output()
	if !strings.Contains(string(stat), "User:     0") || !strings.Contains(string(stat), "Mode:  0755") {
		t.Fatalf("agent in image is not root-owned 0755:\n%s", stat)
	}
	// Reflashing keeps the image's other files and its architecture check.
	o.Token = "opt_second"
	res, err := Flash(context.Background(), o)
	if err != nil || res.Written != 1 {
		t.Fatalf("reflash: %+v %v, want only the token written", res, err)
	}
	if got := cat(bundle.TokenPath); got != "opt_second\n" {
		t.Fatalf("token after reflash %q", got)
	}
	b7, pub7 := makeBundle(t, "armv7")
	if _, err := Flash(context.Background(), Options{Bundle: b7, Trusted: []ed25519.PublicKey{pub7}, Target: img}); !errors.Is(err, ErrWrongArch) {
		t.Fatalf("armv7 bundle into an arm64 image: %v", err)
	}
}
