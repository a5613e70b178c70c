package flash

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// readImage unpacks an existing ext4 image into root, so that a second
// flash keeps what the image holds besides the bundle.
func readImage(ctx context.Context, img, root string, say func(string, ...any)) error {
	if err := os.MkdirAll(root, 0o755); err != nil {
		return fmt.Errorf("flash: %w", err)
	}
	if _, err := os.Stat(img); os.IsNotExist(err) {
		return nil
	}
	say("reading %s", img)
	if err := tool(ctx, "debugfs", "-R", "rdump / "+root, img); err != nil {
		return fmt.Errorf("flash: %w: reading %s: %w", ErrTarget, img, err)
	}
	return os.RemoveAll(filepath.Join(root, "lost+found"))
}

// writeImage builds a fresh ext4 image from root beside img and renames it
// over, so an interrupted flash leaves the old image whole.
func writeImage(ctx context.Context, root, img string, size int64, say func(string, ...any)) error {
	var content int64
	_ = filepath.WalkDir(root, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				content += fi.Size()
			}
		}
		return nil
	})
	fitted := content + content/3 + 32<<20
	if fi, err := os.Stat(img); err == nil {
		fitted = max(fitted, fi.Size())
	}
	size = max(size, fitted)
	tmp := img + ".outpost-tmp"
	_ = os.Remove(tmp)
	say("writing ext4 image %s (%d MiB)", img, size>>20)
	if err := tool(ctx, "mke2fs", "-q", "-t", "ext4", "-F", "-L", "outpost-root", "-E", "root_owner=0:0", "-d", root, tmp, fmt.Sprintf("%dk", size>>10)); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("flash: mke2fs: %w", err)
	}
	// mke2fs -d copies owners from the files, which belong to whoever ran
	// outpostctl; a device's system files belong to root.
	if os.Getuid() != 0 {
		var cmds bytes.Buffer
		_ = filepath.WalkDir(root, func(p string, _ fs.DirEntry, err error) error {
			if err == nil && p != root {
				rel := "/" + filepath.ToSlash(strings.TrimPrefix(p, root+string(filepath.Separator)))
				fmt.Fprintf(&cmds, "sif %q uid 0\nsif %q gid 0\n", rel, rel)
			}
			return nil
		})
		script := tmp + ".cmds"
		if err := os.WriteFile(script, cmds.Bytes(), 0o600); err != nil {
			return fmt.Errorf("flash: %w", err)
		}
		defer os.Remove(script)
		if err := tool(ctx, "debugfs", "-w", "-f", script, tmp); err != nil {
			os.Remove(tmp)
			return fmt.Errorf("flash: setting owners: %w", err)
		}
	}
	if err := os.Rename(tmp, img); err != nil {
		return fmt.Errorf("flash: %w", err)
	}
	return nil
}

func tool(ctx context.Context, name string, args ...string) error {
	if _, err := exec.LookPath(name); err != nil {
		return fmt.Errorf("%s is not installed (Debian: e2fsprogs): %w", name, err)
	}
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", name, err, bytes.TrimSpace(out))
	}
	return nil
}
