// Package bundle is the device bundle format: one tar+zstd file whose first
// entry is a manifest naming every file with its size, mode and sha256, and
// whose second is an ed25519 signature over that manifest. A reader checks
// the signature before it reads any file, and every file against the
// manifest as it streams, so nothing unsigned ever reaches a device.
package bundle

import (
	"archive/tar"
	"crypto/ed25519"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"
)

// Format is the manifest format this package writes and reads.
const Format = 1

const (
	manifestName  = "manifest.json"
	signatureName = "manifest.sig"
	filesPrefix   = "files/"
	maxManifest   = 1 << 20
)

// Arch is one architecture a bundle can be built for.
type Arch struct {
	GOARCH, GOARM string
	Machine       elf.Machine // of its binaries
	MachineName   string      // as people write it
}

// Architectures a bundle can be built for, by bundle name.
var Architectures = map[string]Arch{
	"amd64": {GOARCH: "amd64", Machine: elf.EM_X86_64, MachineName: "x86-64"},
	"arm64": {GOARCH: "arm64", Machine: elf.EM_AARCH64, MachineName: "aarch64"},
	"armv7": {GOARCH: "arm", GOARM: "7", Machine: elf.EM_ARM, MachineName: "arm"},
}

// ArchOf names the bundle architecture whose binaries are machine m.
func ArchOf(m elf.Machine) (string, Arch, bool) {
	for name, a := range Architectures {
		if a.Machine == m {
			return name, a, true
		}
	}
	return "", Arch{}, false
}

// MachineOf is the ELF machine of binaries for a Go architecture.
func MachineOf(goarch string) (elf.Machine, bool) {
	for _, a := range Architectures {
		if a.GOARCH == goarch {
			return a.Machine, true
		}
	}
	return 0, false
}

// Manifest describes a bundle.
type Manifest struct {
	Format       int       `json:"format"`
	AgentVersion string    `json:"agent_version"`
	Arch         string    `json:"arch"`
	Accelerator  string    `json:"accelerator"`
	CreatedAt    time.Time `json:"created_at"`
	Files        []File    `json:"files"`
}

// File is one file of the bundle, at Path relative to the device's root.
type File struct {
	Path   string      `json:"path"`
	Mode   os.FileMode `json:"mode"`
	Size   int64       `json:"size"`
	SHA256 string      `json:"sha256"`
	// Source is where Write reads the file from; it is not in the bundle.
	Source string `json:"-"`
}

type signature struct {
	KeyID     string `json:"keyid"`
	Signature []byte `json:"sig"`
}

// KeyID names a signing key: the first 16 hex digits of its sha256.
func KeyID(pub ed25519.PublicKey) string {
	s := sha256.Sum256(pub)
	return hex.EncodeToString(s[:8])
}

// signed is what the signature covers: a context string, so that the
// signature means nothing elsewhere, then the manifest's exact bytes.
func signed(manifest []byte) []byte {
	return append([]byte("outpost-bundle-v1\x00"), manifest...)
}

// cleanPath accepts only relative, clean paths without "..".
func cleanPath(p string) (string, error) {
	if p == "" || path.IsAbs(p) || path.Clean(p) != p || p == ".." || strings.HasPrefix(p, "../") {
		return "", fmt.Errorf("%w: unsafe path %q", ErrFormat, p)
	}
	return p, nil
}

// Write hashes every file of m (from its Source), signs the manifest with
// key and streams the bundle to w.
func Write(w io.Writer, m Manifest, key ed25519.PrivateKey) error {
	m.Format = Format
	if m.CreatedAt.IsZero() {
		m.CreatedAt = time.Now().UTC().Truncate(time.Second)
	}
	for i := range m.Files {
		f := &m.Files[i]
		if _, err := cleanPath(f.Path); err != nil {
			return err
		}
		sum, size, err := hashFile(f.Source)
		if err != nil {
			return err
		}
		f.SHA256, f.Size = sum, size
	}
	mdata, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return fmt.Errorf("bundle: manifest: %w", err)
	}
	sdata, err := json.Marshal(signature{KeyID: KeyID(key.Public().(ed25519.PublicKey)), Signature: ed25519.Sign(key, signed(mdata))})
	if err != nil {
		return fmt.Errorf("bundle: signature: %w", err)
	}
	zw, err := zstd.NewWriter(w)
	if err != nil {
		return fmt.Errorf("bundle: %w", err)
	}
	tw := tar.NewWriter(zw)
	for _, e := range []struct {
		name string
		data []byte
	}{{manifestName, mdata}, {signatureName, sdata}} {
		if err := tw.WriteHeader(&tar.Header{Name: e.name, Mode: 0o644, Size: int64(len(e.data)), ModTime: m.CreatedAt, Typeflag: tar.TypeReg}); err != nil {
			return fmt.Errorf("bundle: %w", err)
		}
		if _, err := tw.Write(e.data); err != nil {
			return fmt.Errorf("bundle: %w", err)
		}
	}
	for _, f := range m.Files {
		if err := copyIn(tw, f, m.CreatedAt); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("bundle: %w", err)
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("bundle: %w", err)
	}
	return nil
}

func copyIn(tw *tar.Writer, f File, mtime time.Time) error {
	src, err := os.Open(f.Source)
	if err != nil {
		return fmt.Errorf("bundle: %w", err)
	}
	defer src.Close()
	if err := tw.WriteHeader(&tar.Header{Name: filesPrefix + f.Path, Mode: int64(f.Mode.Perm()), Size: f.Size, ModTime: mtime, Typeflag: tar.TypeReg}); err != nil {
		return fmt.Errorf("bundle: %w", err)
	}
	// Exactly Size bytes: a file that changed since hashing fails here.
	if _, err := io.CopyN(tw, src, f.Size); err != nil {
		return fmt.Errorf("bundle: %s changed while bundling: %w", f.Source, err)
	}
	return nil
}

func hashFile(p string) (string, int64, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", 0, fmt.Errorf("bundle: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, fmt.Errorf("bundle: %s: %w", p, err)
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// Extract verifies the bundle read from r against the trusted keys and
// writes its files under dir (a staging directory). It returns the
// manifest only when the signature and every file check out; on any error
// dir holds partial content the caller must discard. progress, if not
// nil, is called with the bytes extracted so far.
func Extract(r io.Reader, trusted []ed25519.PublicKey, dir string, progress func(done, total int64)) (Manifest, error) {
	// A bundle is one sequential stream: one decoder goroutine, and a window
	// no larger than the writer's (8 MiB) allows with room, so a hostile
	// frame header cannot make every read allocate hundreds of MiB.
	zr, err := zstd.NewReader(r, zstd.WithDecoderMaxMemory(256<<20), zstd.WithDecoderMaxWindow(32<<20), zstd.WithDecoderConcurrency(1))
	if err != nil {
		return Manifest{}, fmt.Errorf("bundle: %w: %w", ErrFormat, err)
	}
	defer zr.Close()
	tr := tar.NewReader(zr)
	mdata, err := readEntry(tr, manifestName)
	if err != nil {
		return Manifest{}, err
	}
	sdata, err := readEntry(tr, signatureName)
	if err != nil {
		return Manifest{}, err
	}
	var sig signature
	if err := json.Unmarshal(sdata, &sig); err != nil {
		return Manifest{}, fmt.Errorf("bundle: %w: signature: %w", ErrFormat, err)
	}
	ok := false
	for _, k := range trusted {
		if ed25519.Verify(k, signed(mdata), sig.Signature) {
			ok = true
			break
		}
	}
	if !ok {
		return Manifest{}, fmt.Errorf("bundle: %w: signed by key %s, which is not among the %d trusted", ErrSignature, sig.KeyID, len(trusted))
	}
	// From here the manifest is authentic: everything else is held to it.
	var m Manifest
	if err := json.Unmarshal(mdata, &m); err != nil {
		return Manifest{}, fmt.Errorf("bundle: %w: manifest: %w", ErrFormat, err)
	}
	if m.Format != Format {
		return Manifest{}, fmt.Errorf("bundle: %w: format %d, this outpostctl reads %d", ErrFormat, m.Format, Format)
	}
	want := map[string]File{}
	var total, done int64
	for _, f := range m.Files {
		if _, err := cleanPath(f.Path); err != nil {
			return Manifest{}, err
		}
		want[f.Path] = f
		total += f.Size
	}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return Manifest{}, fmt.Errorf("bundle: %w: %w", ErrTampered, err)
		}
		name, found := strings.CutPrefix(h.Name, filesPrefix)
		f, listed := want[name]
		if !found || !listed || h.Typeflag != tar.TypeReg {
			return Manifest{}, fmt.Errorf("bundle: %w: %q is not in the manifest", ErrTampered, h.Name)
		}
		delete(want, name)
		if err := extractFile(tr, f, filepath.Join(dir, filepath.FromSlash(f.Path))); err != nil {
			return Manifest{}, err
		}
		done += f.Size
		if progress != nil {
			progress(done, total)
		}
	}
	for p := range want {
		return Manifest{}, fmt.Errorf("bundle: %w: %s is missing", ErrTampered, p)
	}
	return m, nil
}

func readEntry(tr *tar.Reader, name string) ([]byte, error) {
	h, err := tr.Next()
	if err != nil {
		return nil, fmt.Errorf("bundle: %w: %w", ErrFormat, err)
	}
	if h.Name != name || h.Size > maxManifest {
		return nil, fmt.Errorf("bundle: %w: entry %q where %s belongs", ErrFormat, h.Name, name)
	}
	return io.ReadAll(io.LimitReader(tr, maxManifest))
}

func extractFile(r io.Reader, f File, dst string) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return fmt.Errorf("bundle: %w", err)
	}
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("bundle: %w", err)
	}
	defer out.Close()
	h := sha256.New()
	// One byte past the signed size tells a longer file from an exact one.
	n, err := io.Copy(io.MultiWriter(out, h), io.LimitReader(r, f.Size+1))
	if err != nil {
		return fmt.Errorf("bundle: %w: %s: %w", ErrTampered, f.Path, err)
	}
	if n != f.Size || hex.EncodeToString(h.Sum(nil)) != f.SHA256 {
		return fmt.Errorf("bundle: %w: %s differs from its signed sha256 and size", ErrTampered, f.Path)
	}
	if err := out.Chmod(f.Mode.Perm()); err != nil {
		return fmt.Errorf("bundle: %w", err)
	}
	return out.Close()
}

// ReadPublicKey reads a public key file: the key's 32 bytes in hex.
func ReadPublicKey(p string) (ed25519.PublicKey, error) {
	data, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("bundle: %w", err)
	}
	b, err := hex.DecodeString(strings.TrimSpace(string(data)))
	if err != nil || len(b) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("bundle: %s: not a hex ed25519 public key", p)
	}
	return ed25519.PublicKey(b), nil
}

// PublicKeyText is what ReadPublicKey reads.
func PublicKeyText(pub ed25519.PublicKey) string { return hex.EncodeToString(pub) + "\n" }
