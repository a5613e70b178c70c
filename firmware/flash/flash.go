// Package flash installs a verified bundle into a device's root
// filesystem: a directory (a mounted card, a chroot) or a raw ext4 image
// file, which it writes with mke2fs -d and debugfs, without root.
package flash

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/outpost-edge/outpost/firmware/bundle"
	"github.com/outpost-edge/outpost/firmware/files"
)

// Options say what to flash where.
type Options struct {
	Bundle  string              // bundle file
	Trusted []ed25519.PublicKey // keys the bundle's signature must verify with
	Target  string              // a directory, or an image file ending in .img
	// ImageSize is the size of a new image in bytes (0: fitted to the
	// content); an existing image keeps its size unless this is larger.
	ImageSize int64
	Token     string // one-time enrolment token, written for first boot
	Device    string // device id, if the installer fixes it
	// Progress receives one line per step and per tenth of the copy.
	Progress io.Writer
}

// Result says what a flash changed.
type Result struct {
	Manifest           bundle.Manifest
	Written, Unchanged int
}

// Flash verifies the bundle completely, checks the target's architecture,
// and only then installs. Running it again with the same bundle changes
// nothing and says so.
func Flash(ctx context.Context, o Options) (Result, error) {
	say := func(format string, a ...any) {
		if o.Progress != nil {
			fmt.Fprintf(o.Progress, format+"\n", a...)
		}
	}
	image := strings.HasSuffix(o.Target, ".img")
	if fi, err := os.Stat(o.Target); err == nil && !fi.IsDir() && !image {
		return Result{}, fmt.Errorf("flash: %w: %s is a file; images must end in .img", ErrTarget, o.Target)
	}
	if !image {
		if _, err := os.Stat(o.Target); err != nil {
			return Result{}, fmt.Errorf("flash: %w: %w", ErrTarget, err)
		}
	}

	stage, err := os.MkdirTemp("", "outpost-flash-")
	if err != nil {
		return Result{}, fmt.Errorf("flash: %w", err)
	}
	defer os.RemoveAll(stage)
	f, err := os.Open(o.Bundle)
	if err != nil {
		return Result{}, fmt.Errorf("flash: %w", err)
	}
	defer f.Close()
	say("verifying %s", o.Bundle)
	tenth := int64(-1)
	m, err := bundle.Extract(f, o.Trusted, filepath.Join(stage, "bundle"), func(done, total int64) {
		if total > 0 && done*10/total != tenth {
			tenth = done * 10 / total
			say("  verified %3d%% (%d of %d MiB)", tenth*10, done>>20, total>>20)
		}
	})
	if err != nil {
		return Result{}, fmt.Errorf("flash: refusing %s: %w", o.Bundle, err)
	}
	say("bundle verified: agent %s for %s (%s), %d files", m.AgentVersion, m.Arch, m.Accelerator, len(m.Files))

	root := o.Target
	if image {
		root = filepath.Join(stage, "root")
		if err := readImage(ctx, o.Target, root, say); err != nil {
			return Result{}, err
		}
	}
	if arch, why := targetArch(root); arch != "" && arch != m.Arch {
		return Result{}, fmt.Errorf("flash: %w: %s is %s (%s), the bundle is %s", ErrWrongArch, o.Target, arch, why, m.Arch)
	}

	res := Result{Manifest: m}
	install := func(rel string, src io.Reader, mode os.FileMode, sum string) error {
		dst := filepath.Join(root, filepath.FromSlash(rel))
		if same(dst, sum, mode) {
			res.Unchanged++
			return nil
		}
		if err := files.Write(dst, src, mode); err != nil {
			return fmt.Errorf("flash: %w", err)
		}
		res.Written++
		return nil
	}
	for _, bf := range m.Files {
		if initialModelReplaced(root, bf.Path) {
			res.Unchanged++
			continue
		}
		src, err := os.Open(filepath.Join(stage, "bundle", filepath.FromSlash(bf.Path)))
		if err != nil {
			return Result{}, fmt.Errorf("flash: %w", err)
		}
		err = install(bf.Path, src, bf.Mode.Perm(), bf.SHA256)
		src.Close()
		if err != nil {
			return Result{}, err
		}
	}
	// Device-specific files: the token and the id, readable by root only.
	extra := map[string]string{}
	if o.Token != "" {
		extra[bundle.TokenPath] = strings.TrimSpace(o.Token) + "\n"
	}
	if o.Device != "" {
		extra[bundle.DeviceEnv] = "OUTPOST_AGENT_DEVICE_ID=" + o.Device + "\n"
	}
	mdata, _ := json.MarshalIndent(m, "", "  ")
	extra[bundle.Installed] = string(mdata) + "\n"
	for rel, content := range extra {
		mode := os.FileMode(0o600)
		if rel == bundle.Installed {
			mode = 0o644
		}
		if err := install(rel, strings.NewReader(content), mode, sha(content)); err != nil {
			return Result{}, err
		}
	}
	if err := enable(root); err != nil {
		return Result{}, err
	}
	if image {
		if err := writeImage(ctx, root, o.Target, o.ImageSize, say); err != nil {
			return Result{}, err
		}
	}
	say("flashed %s: %d files written, %d unchanged; outpost-agent.service enabled", o.Target, res.Written, res.Unchanged)
	return res, nil
}

// enable does what `systemctl enable` would: the wants symlink.
func enable(root string) error {
	link := filepath.Join(root, bundle.UnitWants)
	if dst, err := os.Readlink(link); err == nil && dst == "/"+bundle.UnitPath {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
		return fmt.Errorf("flash: %w", err)
	}
	_ = os.Remove(link)
	if err := os.Symlink("/"+bundle.UnitPath, link); err != nil {
		return fmt.Errorf("flash: enable unit: %w", err)
	}
	return files.SyncDir(filepath.Dir(link))
}

func same(path, sum string, mode os.FileMode) bool {
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != mode {
		return false
	}
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return false
	}
	return hex.EncodeToString(h.Sum(nil)) == sum
}

func sha(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

// targetArch tells the root filesystem's architecture: from a bundle
// installed before, else from the first ELF among well-known programs.
// An empty root has none.
func targetArch(root string) (arch, why string) {
	if data, err := os.ReadFile(filepath.Join(root, bundle.Installed)); err == nil {
		var m bundle.Manifest
		if json.Unmarshal(data, &m) == nil && m.Arch != "" {
			return m.Arch, "an installed bundle"
		}
	}
	for _, p := range []string{"bin/busybox", "bin/sh", "usr/bin/sh", "usr/bin/env", "sbin/init", "usr/lib/systemd/systemd"} {
		full, err := resolve(root, p)
		if err != nil {
			continue
		}
		f, err := elf.Open(full)
		if err != nil {
			continue
		}
		machine, class := f.Machine, f.Class
		f.Close()
		if name, a, ok := bundle.ArchOf(machine); ok {
			return name, "/" + p + " is " + a.MachineName
		}
		return fmt.Sprintf("%v/%v", machine, class), "/" + p
	}
	return "", ""
}

// resolve follows symlinks inside root, never out of it.
func resolve(root, rel string) (string, error) {
	p := rel
	for range 8 {
		full := filepath.Join(root, p)
		fi, err := os.Lstat(full)
		if err != nil {
			return "", err
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
			return full, nil
		}
		dst, err := os.Readlink(full)
		if err != nil {
			return "", err
		}
		if filepath.IsAbs(dst) {
			p = strings.TrimPrefix(filepath.Clean(dst), "/")
		} else {
			p = filepath.Join(filepath.Dir(p), dst)
		}
		if strings.HasPrefix(p, "..") {
			return "", errors.New("symlink leaves the root")
		}
	}
	return "", errors.New("too many symlinks")
}

// initialModelReplaced: a bundle's models are the device's first ones; once
// the agent has taken a model into its update slots, updates own it and a
// reflash must not put the factory version back beside them.
func initialModelReplaced(root, rel string) bool {
	name, ok := strings.CutPrefix(rel, bundle.ModelsDir+"/")
	if !ok {
		return false
	}
	name, _, _ = strings.Cut(name, "/")
	_, err := os.Lstat(filepath.Join(root, bundle.ModelsDir, name, "active"))
	return err == nil
}
