package update

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/outpost-edge/outpost/agent/infer"
	"github.com/outpost-edge/outpost/models/manifest"
)

// A model directory that takes updates has two slots, a/ and b/, and
// active, a symbolic link to one of them. An update installs into the
// slot active does not name, then repoints active with one rename, which
// is atomic: after a power loss active names a complete package, old or
// new. The other slot keeps the previous model for a rollback.
const (
	slotA = "a"
	slotB = "b"
)

func other(slot string) string {
	if slot == slotA {
		return slotB
	}
	return slotA
}

// prepare gives dir the slot layout, converting the layouts a device may
// have been installed with: a plain active/ directory, or a bare package.
// Every step can be repeated after a crash.
func prepare(dir string) error {
	link := filepath.Join(dir, infer.Active)
	fi, err := os.Lstat(link)
	switch {
	case err == nil && fi.Mode()&os.ModeSymlink != 0:
		_, err := activeSlot(dir)
		return err
	case err == nil && fi.IsDir():
		if _, err := os.Stat(filepath.Join(dir, slotA)); err == nil {
			return fmt.Errorf("%w: %s has both an active/ directory and a/", ErrSlots, dir)
		}
		if err := os.Rename(link, filepath.Join(dir, slotA)); err != nil {
			return fmt.Errorf("%w: %w", ErrSlots, err)
		}
		return point(dir, slotA)
	case err == nil:
		return fmt.Errorf("%w: %s is neither a directory nor a link", ErrSlots, link)
	case !errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("%w: %w", ErrSlots, err)
	}
	if _, err := os.Stat(filepath.Join(dir, slotA, manifest.ManifestFile)); err == nil {
		return point(dir, slotA) // a crash came between the rename and the link
	}
	// A bare package: copy it into a/ (the originals stay, unused).
	if err := copyPackage(dir, filepath.Join(dir, slotA)); err != nil {
		return err
	}
	return point(dir, slotA)
}

// StartPackages are the packages of a pipeline's model dir that the agent
// may start with: first the one infer.LoadSlot loads (what active names,
// else dir itself), then slots a/ and b/ where they hold one, which Recover
// may point active at (a rollback during probation, an interrupted
// conversion). A start check that took only the first would keep a device
// from the rollback that gets it running again.
func StartPackages(dir string) []string {
	out := []string{dir}
	if _, err := os.Stat(filepath.Join(dir, infer.Active)); err == nil {
		out[0] = filepath.Join(dir, infer.Active)
	}
	for _, s := range []string{slotA, slotB} {
		if _, err := os.Stat(filepath.Join(dir, s, manifest.ManifestFile)); err == nil {
			out = append(out, filepath.Join(dir, s))
		}
	}
	return out
}

// activeSlot reads which slot active names.
func activeSlot(dir string) (string, error) {
	target, err := os.Readlink(filepath.Join(dir, infer.Active))
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrSlots, err)
	}
	if target != slotA && target != slotB {
		return "", fmt.Errorf("%w: %s/active names %q, not a or b", ErrSlots, dir, target)
	}
	return target, nil
}

// point makes active name slot: a new link renamed over the old one, then
// the directory synced so the rename survives a power loss.
func point(dir, slot string) error {
	tmp := filepath.Join(dir, ".active.tmp")
	os.Remove(tmp)
	if err := os.Symlink(slot, tmp); err != nil {
		return fmt.Errorf("%w: %w", ErrSlots, err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, infer.Active)); err != nil {
		return fmt.Errorf("%w: %w", ErrSlots, err)
	}
	return syncDir(dir)
}

// copyPackage copies a package's two files into dst through dst.tmp, each
// file and the directory synced, so dst is either absent or complete.
func copyPackage(src, dst string) error {
	tmp := dst + ".tmp"
	if err := os.RemoveAll(tmp); err != nil {
		return fmt.Errorf("%w: %w", ErrSlots, err)
	}
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return fmt.Errorf("%w: %w", ErrSlots, err)
	}
	for _, name := range []string{manifest.ManifestFile, manifest.ModelFile} {
		if err := copyFile(filepath.Join(src, name), filepath.Join(tmp, name)); err != nil {
			return err
		}
	}
	if err := syncDir(tmp); err != nil {
		return err
	}
	if err := os.RemoveAll(dst); err != nil {
		return fmt.Errorf("%w: %w", ErrSlots, err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		return fmt.Errorf("%w: %w", ErrSlots, err)
	}
	return syncDir(filepath.Dir(dst))
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrSlots, err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrSlots, err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("%w: copy %s: %w", ErrSlots, src, err)
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return fmt.Errorf("%w: %w", ErrSlots, err)
	}
	return out.Close()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrSlots, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("%w: sync %s: %w", ErrSlots, dir, err)
	}
	return nil
}
