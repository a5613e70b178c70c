package bench

import (
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strings"
	"testing"
)

// profileEnv names a folder: when set, each system benchmark writes a CPU
// profile of its timed section, and an allocation profile taken at its end,
// to DIR/<benchmark>.cpu and DIR/<benchmark>.alloc (README, Performance).
// `go test -cpuprofile` would also profile the set-up (encoding payloads,
// starting the hub), which here costs as much as what is measured.
const profileEnv = "OUTPOST_BENCH_PROFILE"

// profileTimed starts the CPU profile; the returned func stops it and
// writes the allocation profile. Without the variable both are no-ops.
func profileTimed(b *testing.B) (stop func()) {
	dir := os.Getenv(profileEnv)
	if dir == "" {
		return func() {}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	base := filepath.Join(dir, strings.NewReplacer("/", "_", "=", "-").Replace(b.Name()))
	cpu, err := os.Create(base + ".cpu")
	if err != nil {
		b.Fatal(err)
	}
	runtime.MemProfileRate = 64 << 10
	if err := pprof.StartCPUProfile(cpu); err != nil {
		b.Fatal(err)
	}
	return func() {
		pprof.StopCPUProfile()
		_ = cpu.Close()
		f, err := os.Create(base + ".alloc")
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
			b.Fatal(err)
		}
		b.Logf("profiles: %s.cpu, %s.alloc", base, base)
	}
}
