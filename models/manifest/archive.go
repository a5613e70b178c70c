package manifest

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// A package travels as one uncompressed tar holding manifest.json and
// model.onnx: the unit TUF signs and agents install. ONNX weights barely
// compress, so the tar is left plain.

// maxArchiveFile bounds one file of an archive being unpacked.
const maxArchiveFile = 1 << 30

// Pack builds the archive of a package.
func Pack(manifestJSON, model []byte) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range []struct {
		name string
		data []byte
	}{{ManifestFile, manifestJSON}, {ModelFile, model}} {
		if err := tw.WriteHeader(&tar.Header{Name: f.name, Mode: 0o644, Size: int64(len(f.data)), Typeflag: tar.TypeReg}); err != nil {
			return nil, fmt.Errorf("manifest: pack: %w", err)
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, fmt.Errorf("manifest: pack: %w", err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("manifest: pack: %w", err)
	}
	return buf.Bytes(), nil
}

// Unpack writes the package in archive r into dir (created), syncing each
// file, and then checks it with Load. Anything but the two package files
// is refused.
func Unpack(r io.Reader, dir string) (*Manifest, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("manifest: unpack: %w", err)
	}
	tr := tar.NewReader(r)
	seen := map[string]bool{}
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%w: archive: %w", ErrInvalid, err)
		}
		if (h.Name != ManifestFile && h.Name != ModelFile) || h.Typeflag != tar.TypeReg || seen[h.Name] {
			return nil, fmt.Errorf("%w: archive holds %q; a package holds %s and %s once each", ErrInvalid, h.Name, ManifestFile, ModelFile)
		}
		if h.Size > maxArchiveFile {
			return nil, fmt.Errorf("%w: archive: %s is %d bytes", ErrInvalid, h.Name, h.Size)
		}
		seen[h.Name] = true
		if err := writeSynced(filepath.Join(dir, h.Name), io.LimitReader(tr, h.Size)); err != nil {
			return nil, err
		}
	}
	if !seen[ManifestFile] || !seen[ModelFile] {
		return nil, fmt.Errorf("%w: archive lacks %s or %s", ErrInvalid, ManifestFile, ModelFile)
	}
	m, _, err := Load(dir)
	return m, err
}

func writeSynced(path string, r io.Reader) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("manifest: unpack: %w", err)
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return fmt.Errorf("manifest: unpack %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("manifest: unpack %s: %w", path, err)
	}
	return f.Close()
}
