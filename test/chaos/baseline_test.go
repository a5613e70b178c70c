package chaos

// Shared helpers of the newer scenarios: return to baseline after a
// fault (goroutines, open file descriptors), and small filesystems that
// fill up.

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// baseline is the process's goroutines and open file descriptors.
type baseline struct{ goroutines, fds int }

func takeBaseline() baseline { return baseline{runtime.NumGoroutine(), openFDs()} }

func openFDs() int {
	es, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	return len(es)
}

// Margins of the return to baseline: idle HTTP and Kafka client
// connections of the test process and the runtime's own helpers come and
// go; a leak per device, per connection or per retry is far larger.
const (
	goroutineMargin = 25
	fdMargin        = 10
	settle          = 20 * time.Second
)

// watchBaseline records the baseline now and registers, as the last
// cleanup to run (t.Cleanup is LIFO, so register it first), a check that
// once the scenario's hub, devices and links are gone the process is
// back within the margins after at most settle. It logs one line:
//
//	BASELINE | scenario | goroutines before → after | fds before → after | peak rss
//
// strict: a miss fails the test; else it is logged as BASELINE-LEAK.
func watchBaseline(t *testing.T, scenario string, strict bool) {
	t.Helper()
	runtime.GC()
	before := takeBaseline()
	resetPeakRSS()
	t.Cleanup(func() {
		peak := rss() // before settling: the scenario's own peak
		deadline := time.Now().Add(settle)
		var now baseline
		for {
			runtime.GC()
			now = takeBaseline()
			if now.goroutines <= before.goroutines+goroutineMargin && now.fds <= before.fds+fdMargin {
				break
			}
			if time.Now().After(deadline) {
				break
			}
			time.Sleep(500 * time.Millisecond)
		}
		line := fmt.Sprintf("%s | goroutines %d → %d | fds %d → %d | %s", scenario, before.goroutines, now.goroutines, before.fds, now.fds, peak)
		if now.goroutines > before.goroutines+goroutineMargin || now.fds > before.fds+fdMargin {
			msg := fmt.Sprintf("not back to baseline %s after the scenario (margins +%d goroutines, +%d fds): %s", settle, goroutineMargin, fdMargin, line)
			if strict {
				buf := make([]byte, 1<<20)
				t.Errorf("%s\n%s", msg, buf[:runtime.Stack(buf, true)])
			} else {
				t.Logf("BASELINE-LEAK | %s", msg)
			}
			return
		}
		t.Logf("BASELINE | %s", line)
	})
}

// smallFS mounts a tmpfs of size MiB on a directory of the test's own
// and returns it; it is unmounted in t.Cleanup (registered after the
// temp dir, so before the dir is removed), even on failure. Register
// what uses it after calling smallFS, so that it is closed first.
func smallFS(t *testing.T, mib int) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatalf("the disk-full scenarios need root (mount -t tmpfs); running as uid %d", os.Geteuid())
	}
	dir := filepath.Join(t.TempDir(), "small")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%dm,mode=0755", mib), "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs on %s: %v\n%s", dir, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Logf("umount %s: %v %s; detaching it lazily", dir, err, strings.TrimSpace(string(out)))
			_ = exec.Command("umount", "-l", dir).Run()
		}
	})
	t.Logf("small filesystem: tmpfs of %d MiB on %s", mib, dir)
	return dir
}

// fillFS writes a filler file in dir until the filesystem is full and
// returns its path (delete it to free the space).
func fillFS(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	if err != nil {
		t.Fatalf("filler: %v", err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	var n int64
	for {
		w, err := f.Write(buf)
		n += int64(w)
		if err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("filler: %v", err)
			}
			break
		}
	}
	// The last pages, a few bytes at a time.
	for {
		if _, err := f.Write(buf[:512]); err != nil {
			break
		}
		n += 512
	}
	var st syscall.Statfs_t
	_ = syscall.Statfs(dir, &st)
	t.Logf("filesystem %s filled: filler %d KiB, %d bytes free", dir, n>>10, st.Bavail*uint64(st.Bsize))
	return path
}
