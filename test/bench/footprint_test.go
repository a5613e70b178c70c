package bench

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/models/manifest"
	"github.com/outpost-edge/outpost/models/onnx"
	"github.com/outpost-edge/outpost/models/ort"
	"github.com/outpost-edge/outpost/test/testenv"
)

// rssMB reads VmRSS and its parts RssAnon (private memory) and RssFile
// (mapped files: the binary and ONNX Runtime's 35 MB library, shared and
// reclaimable) in MiB.
func rssMB(b *testing.B, pid int) (rss, anon, file float64) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.Atoi(f[1])
		switch f[0] {
		case "VmRSS:":
			rss = float64(kb) / 1024
		case "RssAnon:":
			anon = float64(kb) / 1024
		case "RssFile:":
			file = float64(kb) / 1024
		}
	}
	if rss == 0 {
		b.Fatal("no VmRSS")
	}
	return rss, anon, file
}

// runFor starts the agent with conf, waits, and returns its RSS in MiB.
func runFor(b *testing.B, bin, conf string, env ...string) (rss, anon, file float64) {
	cmd := exec.Command(bin, "--config", conf)
	cmd.Env = append(os.Environ(), env...)
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	time.Sleep(4 * time.Second)
	return rssMB(b, cmd.Process.Pid)
}

// BenchmarkAgentFootprint reports the stripped agent binary's size and its
// resident memory idle (no pipeline) and with ONNX Runtime and a small
// model loaded. Targets: binary ≤ 20 MB, RSS ≤ 20 MB idle, ≤ 40 MB with a model.
func BenchmarkAgentFootprint(b *testing.B) {
	root, err := testenv.Root()
	if err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	bin := filepath.Join(dir, "outpost-agent")
	build := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", bin, "./agent/cmd/outpost-agent")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("build: %v\n%s", err, out)
	}
	st, _ := os.Stat(bin)

	// Unreachable hub: the agent runs offline, as on a device without network.
	common := "device: {id: footprint}\nhub: {url: \"tcp://127.0.0.1:1\"}\nmetrics: {listen: \"\"}\nlog: {level: error}\n"
	idle := filepath.Join(dir, "idle.yaml")
	os.WriteFile(idle, []byte(common+"data_dir: "+filepath.Join(dir, "idle")+"\n"), 0o644)

	if err := ort.Init(testenv.ORTLibrary(b)); err != nil {
		b.Fatal(err)
	}
	model, _ := onnx.Logistic([][]float32{{1, -1}}, []float32{0})
	s, _ := ort.NewSession(model)
	gout, _ := s.Run([]float32{0, 0}, 2)
	s.Close()
	mdir := filepath.Join(dir, "model")
	if err := manifest.Write(mdir, &manifest.Manifest{Name: "fp", Version: 1, Task: "anomaly", Outputs: manifest.Outputs{Threshold: 0.9},
		Features: []manifest.Feature{{Field: "vibration", Agg: "mean", Std: 1}, {Field: "vibration", Agg: "max", Std: 1}},
		Golden:   []manifest.Golden{{Input: []float32{0, 0}, Output: gout, Tolerance: 1e-6}}}, model); err != nil {
		b.Fatal(err)
	}
	withModel := filepath.Join(dir, "model.yaml")
	os.WriteFile(withModel, []byte(common+"data_dir: "+filepath.Join(dir, "m")+"\n"+`pipelines:
  - name: fp
    source: {type: simulator, simulator: {sensors: 10, rate: 10}}
    decode: {key_field: sensor, time_field: ts, fields: [vibration]}
    window: {kind: tumbling, size: 1s}
    aggregations: [mean, max]
    model: {dir: `+mdir+`, threads: 1}
`), 0o644)
	// One measurement whatever b.N is: `make bench` asks every benchmark
	// for 400 iterations, and a footprint does not improve by repetition.
	b.ResetTimer()
	rssIdle, _, _ := runFor(b, bin, idle)
	rssModel, anon, file := runFor(b, bin, withModel, "OUTPOST_ORT_LIB="+testenv.ORTLibrary(b))
	b.ReportMetric(float64(st.Size())/(1<<20), "binary_MiB")
	b.ReportMetric(rssIdle, "rss_idle_MiB")
	b.ReportMetric(rssModel, "rss_model_MiB")
	b.ReportMetric(anon, "rss_model_anon_MiB")
	b.ReportMetric(file, "rss_model_file_MiB")
}
