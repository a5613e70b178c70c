package bundle

import (
	"archive/tar"
	"bytes"
	"crypto/ed25519"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/klauspost/compress/zstd"
)

func testBundle(t *testing.T) ([]byte, ed25519.PublicKey) {
	t.Helper()
	pub, key, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	src := map[string]string{"opt/outpost/bin/outpost-agent": "an agent binary", "etc/outpost/agent.yaml": "device: {}\n"}
	m := Manifest{AgentVersion: "1.2.3", Arch: "arm64", Accelerator: "cpu"}
	for p, content := range src {
		f := filepath.Join(dir, filepath.Base(p))
		if err := os.WriteFile(f, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		m.Files = append(m.Files, File{Path: p, Mode: 0o755, Source: f})
	}
	var buf bytes.Buffer
	if err := Write(&buf, m, key); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), pub
}

// rewrite re-packs a bundle, letting edit change each entry's content or
// drop it (nil), and add appended entries.
func rewrite(t *testing.T, b []byte, edit func(name string, data []byte) []byte, extra map[string][]byte) []byte {
	t.Helper()
	zr, err := zstd.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	tr := tar.NewReader(zr)
	var out bytes.Buffer
	zw, _ := zstd.NewWriter(&out)
	tw := tar.NewWriter(zw)
	put := func(name string, data []byte) {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		tw.Write(data)
	}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(tr)
		if data = edit(h.Name, data); data != nil {
			put(h.Name, data)
		}
	}
	for n, d := range extra {
		put(n, d)
	}
	tw.Close()
	zw.Close()
	return out.Bytes()
}

func TestRoundTrip(t *testing.T) {
	b, pub := testBundle(t)
	dir := t.TempDir()
	var last int64
	m, err := Extract(bytes.NewReader(b), []ed25519.PublicKey{pub}, dir, func(done, total int64) { last = done })
	if err != nil {
		t.Fatal(err)
	}
	if m.Arch != "arm64" || len(m.Files) != 2 || last != int64(len("an agent binary")+len("device: {}\n")) {
		t.Fatalf("manifest %+v, progress %d", m, last)
	}
	got, err := os.ReadFile(filepath.Join(dir, "opt/outpost/bin/outpost-agent"))
	if err != nil || string(got) != "an agent binary" {
		t.Fatalf("extracted %q, %v", got, err)
	}
	if fi, _ := os.Stat(filepath.Join(dir, "opt/outpost/bin/outpost-agent")); fi.Mode().Perm() != 0o755 {
		t.Fatalf("mode %v, want 0755", fi.Mode())
	}
}

func TestRefusals(t *testing.T) {
	b, pub := testBundle(t)
	other, _, _ := ed25519.GenerateKey(nil)
	same := func(_ string, d []byte) []byte { return d }
	cases := []struct {
		name    string
		bundle  []byte
		trusted []ed25519.PublicKey
		want    error
	}{
		{"untrusted signer", b, []ed25519.PublicKey{other}, ErrSignature},
		{"no trusted key", b, nil, ErrSignature},
		{"file content changed", rewrite(t, b, func(n string, d []byte) []byte {
			if n == "files/opt/outpost/bin/outpost-agent" {
				return []byte("an agent binarY")
			}
			return d
		}, nil), []ed25519.PublicKey{pub}, ErrTampered},
		{"file longer", rewrite(t, b, func(n string, d []byte) []byte {
			if n == "files/etc/outpost/agent.yaml" {
				return append(d, "evil: 1\n"...)
			}
			return d
		}, nil), []ed25519.PublicKey{pub}, ErrTampered},
		{"manifest edited", rewrite(t, b, func(n string, d []byte) []byte {
			if n == "manifest.json" {
				return bytes.Replace(d, []byte(`"arm64"`), []byte(`"amd64"`), 1)
			}
			return d
		}, nil), []ed25519.PublicKey{pub}, ErrSignature},
		{"extra file", rewrite(t, b, same, map[string][]byte{"files/etc/cron.d/evil": []byte("x")}), []ed25519.PublicKey{pub}, ErrTampered},
		{"file missing", rewrite(t, b, func(n string, d []byte) []byte {
			if n == "files/etc/outpost/agent.yaml" {
				return nil
			}
			return d
		}, nil), []ed25519.PublicKey{pub}, ErrTampered},
		{"not a bundle", []byte("hello"), []ed25519.PublicKey{pub}, ErrFormat},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Extract(bytes.NewReader(c.bundle), c.trusted, t.TempDir(), nil)
			if !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
		})
	}
}

func TestUnsafePathsAreRefused(t *testing.T) {
	_, key, _ := ed25519.GenerateKey(nil)
	f := filepath.Join(t.TempDir(), "x")
	os.WriteFile(f, []byte("x"), 0o644)
	for _, p := range []string{"../etc/passwd", "/etc/passwd", "a/../../b", ""} {
		err := Write(io.Discard, Manifest{Arch: "arm64", Files: []File{{Path: p, Source: f}}}, key)
		if !errors.Is(err, ErrFormat) {
			t.Errorf("path %q: %v, want ErrFormat", p, err)
		}
	}
}

// FuzzExtract: whatever the bytes, Extract returns an error or a verified
// manifest, and never panics.
func FuzzExtract(f *testing.F) {
	b, pub := testBundleF(f)
	f.Add(b)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := Extract(bytes.NewReader(data), []ed25519.PublicKey{pub}, t.TempDir(), nil)
		if err == nil && m.Format != Format {
			t.Fatalf("accepted a manifest of format %d", m.Format)
		}
	})
}

func testBundleF(f *testing.F) ([]byte, ed25519.PublicKey) {
	pub, key, _ := ed25519.GenerateKey(nil)
	src := filepath.Join(f.TempDir(), "x")
	os.WriteFile(src, []byte("content"), 0o644)
	var buf bytes.Buffer
	if err := Write(&buf, Manifest{Arch: "arm64", Files: []File{{Path: "opt/x", Mode: 0o644, Source: src}}}, key); err != nil {
		f.Fatal(err)
	}
	return buf.Bytes(), pub
}
