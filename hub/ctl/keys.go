package ctl

import (
	"context"
	"crypto/ed25519"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/outpost-edge/outpost/sync/tuf"
)

// keysInit makes a new signing hierarchy in a directory on the offline
// machine: N root keys, the hub's online keys, and root version 1 signed
// by every root key.
func keysInit(fs *flag.FlagSet) runFunc {
	dir := fs.String("dir", "", "directory to create the keys in (on the offline machine)")
	n := fs.Int("root-keys", 3, "number of root keys")
	threshold := fs.Int("threshold", 2, "root signatures needed to change root")
	expires := fs.Duration("expires", tuf.RootExpiry, "root validity")
	return func(_ context.Context, c *cli, args []string) error {
		if err := fs.Parse(args); err != nil || *dir == "" || fs.NArg() > 0 {
			return fmt.Errorf("%w: keys init --dir DIR [--root-keys 3] [--threshold 2]", errUsage)
		}
		if *threshold < 1 || *threshold > *n {
			return fmt.Errorf("%w: --threshold must be 1 to --root-keys (%d)", errUsage, *n)
		}
		if err := os.MkdirAll(*dir, 0o700); err != nil {
			return err
		}
		if _, err := os.Stat(filepath.Join(*dir, "root.json")); err == nil {
			return fmt.Errorf("%s already holds root.json: keys are never overwritten", *dir)
		}
		var keys []ed25519.PrivateKey
		spec := tuf.RootSpec{Version: 1, Threshold: *threshold, Expires: time.Now().Add(*expires)}
		for i := 1; i <= *n; i++ {
			k, err := tuf.GenerateKey()
			if err != nil {
				return err
			}
			if err := tuf.WriteKey(filepath.Join(*dir, fmt.Sprintf("root-%d.key", i)), k); err != nil {
				return err
			}
			keys = append(keys, k)
			spec.RootKeys = append(spec.RootKeys, k.Public().(ed25519.PublicKey))
		}
		online, err := tuf.GenerateOnlineKeys()
		if err != nil {
			return err
		}
		if err := tuf.WriteOnlineKeys(filepath.Join(*dir, "online.json"), online); err != nil {
			return err
		}
		spec.Online = online.Public()
		root, err := tuf.NewRoot(spec)
		if err != nil {
			return err
		}
		for _, k := range keys {
			if root, err = tuf.SignRoot(root, k); err != nil {
				return err
			}
		}
		if err := os.WriteFile(filepath.Join(*dir, "root.json"), root, 0o644); err != nil {
			return err
		}
		_, err = fmt.Fprintf(c.out, `created in %s:
  root-1.key … root-%d.key  root keys (threshold %d): move each to its own offline medium, then delete them here
  online.json              the hub's targets/snapshot/timestamp keys: copy to the hub (updates.online_keys)
  root.json                root version 1: to the hub (updates.root_file) and into every device (updates.trusted_root)
`, *dir, *n, *threshold)
		return err
	}
}

// keysRotate builds the next root version, unsigned: root keys revoked or
// added, a new threshold, new online keys. Sign it with keys sign.
func keysRotate(fs *flag.FlagSet) runFunc {
	current := fs.String("root", "", "the current root metadata")
	out := fs.String("out", "", "where to write the next root (unsigned)")
	dir := fs.String("dir", "", "directory for new keys (with --add-root-keys or --new-online)")
	revoke := fs.String("revoke", "", "comma-separated root key files or key ids to drop")
	add := fs.Int("add-root-keys", 0, "new root keys to generate into --dir")
	threshold := fs.Int("threshold", 0, "new root threshold (0: unchanged)")
	newOnline := fs.Bool("new-online", false, "generate new online keys into --dir (online-vN.json)")
	expires := fs.Duration("expires", tuf.RootExpiry, "validity of the new root")
	return func(_ context.Context, c *cli, args []string) error {
		if err := fs.Parse(args); err != nil || *current == "" || *out == "" || fs.NArg() > 0 {
			return fmt.Errorf("%w: keys rotate --root CURRENT.json --out NEXT.json [--revoke root-2.key] [--add-root-keys N --dir DIR] [--threshold T] [--new-online --dir DIR]", errUsage)
		}
		if (*add > 0 || *newOnline) && *dir == "" {
			return fmt.Errorf("%w: --dir is needed for new keys", errUsage)
		}
		cur, err := os.ReadFile(*current)
		if err != nil {
			return err
		}
		st, err := tuf.InspectRoot(cur)
		if err != nil {
			return err
		}
		rot := tuf.Rotation{Threshold: *threshold, Expires: time.Now().Add(*expires)}
		for _, r := range strings.Split(*revoke, ",") {
			if r = strings.TrimSpace(r); r == "" {
				continue
			}
			if k, err := tuf.ReadKey(r); err == nil {
				id, err := tuf.KeyID(k.Public().(ed25519.PublicKey))
				if err != nil {
					return err
				}
				r = id
			}
			rot.Revoke = append(rot.Revoke, r)
		}
		next := st.Version + 1
		for i := 1; i <= *add; i++ {
			k, err := tuf.GenerateKey()
			if err != nil {
				return err
			}
			if err := tuf.WriteKey(filepath.Join(*dir, fmt.Sprintf("root-v%d-%d.key", next, i)), k); err != nil {
				return err
			}
			rot.Add = append(rot.Add, k.Public().(ed25519.PublicKey))
		}
		if *newOnline {
			k, err := tuf.GenerateOnlineKeys()
			if err != nil {
				return err
			}
			if err := tuf.WriteOnlineKeys(filepath.Join(*dir, fmt.Sprintf("online-v%d.json", next)), k); err != nil {
				return err
			}
			pub := k.Public()
			rot.Online = &pub
		}
		data, err := tuf.NextRoot(cur, rot)
		if err != nil {
			return err
		}
		if err := os.WriteFile(*out, data, 0o644); err != nil {
			return err
		}
		_, err = fmt.Fprintf(c.out, "wrote root version %d to %s, unsigned: sign it with a threshold of the version %d root keys and of its own (outpostctl keys sign)\n", next, *out, st.Version)
		return err
	}
}

// keysSign adds one key's signature to a root file, in place.
func keysSign(fs *flag.FlagSet) runFunc {
	root := fs.String("root", "", "root metadata to sign (in place)")
	keyFile := fs.String("key", "", "a root key file")
	return func(_ context.Context, c *cli, args []string) error {
		if err := fs.Parse(args); err != nil || *root == "" || *keyFile == "" || fs.NArg() > 0 {
			return fmt.Errorf("%w: keys sign --root ROOT.json --key root-N.key", errUsage)
		}
		data, err := os.ReadFile(*root)
		if err != nil {
			return err
		}
		k, err := tuf.ReadKey(*keyFile)
		if err != nil {
			return err
		}
		if data, err = tuf.SignRoot(data, k); err != nil {
			return err
		}
		if err := os.WriteFile(*root, data, 0o644); err != nil {
			return err
		}
		st, err := tuf.InspectRoot(data)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(c.out, "signed root version %d: %d of its threshold of %d signatures by its own keys (a rotation also needs the previous root's threshold: keys show NEXT PREVIOUS)\n",
			st.Version, st.Signed, st.Threshold)
		return err
	}
}

// keysShow says what a root file is and whether it is ready to publish.
func keysShow(_ context.Context, c *cli, args []string) error {
	if len(args) < 1 || len(args) > 2 {
		return fmt.Errorf("%w: keys show ROOT.json [PREVIOUS_ROOT.json]", errUsage)
	}
	data, err := os.ReadFile(args[0])
	if err != nil {
		return err
	}
	st, err := tuf.InspectRoot(data)
	if err != nil {
		return err
	}
	fmt.Fprintf(c.out, "root version %d, expires %s, threshold %d of %d root keys, %d valid signatures by its own keys\n",
		st.Version, st.Expires.Format(time.RFC3339), st.Threshold, len(st.RootKeys), st.Signed)
	if len(args) == 2 {
		prev, err := os.ReadFile(args[1])
		if err != nil {
			return err
		}
		if err := tuf.VerifyRotation(prev, data); err != nil {
			return fmt.Errorf("not ready: %w", err)
		}
		_, err = fmt.Fprintln(c.out, "ready: clients that trust the previous root will accept it")
		return err
	}
	if !st.Complete {
		return fmt.Errorf("not ready: %d of %d signatures", st.Signed, st.Threshold)
	}
	_, err = fmt.Fprintln(c.out, "complete by its own keys (for a rotation, also check against the previous root: keys show NEXT PREVIOUS)")
	return err
}
