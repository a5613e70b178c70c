package bench

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/agent/infer"
	"github.com/outpost-edge/outpost/models/manifest"
	"github.com/outpost-edge/outpost/models/onnx"
	"github.com/outpost-edge/outpost/models/ort"
	"github.com/outpost-edge/outpost/test/fleettest"
	"github.com/outpost-edge/outpost/test/service"
	"github.com/outpost-edge/outpost/test/testenv"
)

// footprintModels packages the three models BenchmarkAgentModelFootprint
// loads into dir: small (BenchmarkAgentFootprint's logistic model on
// mean and max of vibration), seq (a 1-D CNN, 1 channel × 200 steps, on
// a sequence input of vibration) and img96 (models/onnx.ImageCNN96,
// 981,066 parameters, on a 96×96 RGB image input).
func footprintModels(b *testing.B, dir string) map[string]string {
	dirs := map[string]string{}
	small, _ := onnx.Logistic([][]float32{{1, -1}}, []float32{0})
	dirs["small"] = filepath.Join(dir, "small")
	fleettest.WritePackage(b, dirs["small"], &manifest.Manifest{Name: "fp-small", Version: 1, Task: "anomaly", Outputs: manifest.Outputs{Threshold: 0.9},
		Features: []manifest.Feature{{Field: "vibration", Agg: "mean", Std: 1}, {Field: "vibration", Agg: "max", Std: 1}}}, small)
	seq, err := onnx.CNN1D("wave", 1, 200, 8, 5, 3)
	if err != nil {
		b.Fatal(err)
	}
	dirs["seq"] = filepath.Join(dir, "seq")
	fleettest.WritePackage(b, dirs["seq"], &manifest.Manifest{Name: "fp-seq", Version: 1, Task: "anomaly", Outputs: manifest.Outputs{Threshold: 0.99},
		Inputs: []manifest.Input{{Name: "wave", Kind: manifest.Sequence, Sequence: &manifest.SequenceSpec{
			Fields: []string{"vibration"}, Steps: 200, Layout: "NCT", MinSamples: 100, Short: "pad",
			Normalize: []manifest.Norm{{Mean: 0.5, Std: 0.2}}}}}}, seq)
	img, _, err := onnx.ImageCNN96(rand.New(rand.NewPCG(7, 7)), false)
	if err != nil {
		b.Fatal(err)
	}
	dirs["img96"] = filepath.Join(dir, "img96")
	fleettest.WritePackage(b, dirs["img96"], &manifest.Manifest{Name: "fp-img96", Version: 1, Task: "classification",
		Inputs: []manifest.Input{{Kind: manifest.Image, Image: &manifest.ImageSpec{Width: 96, Height: 96, Channels: "RGB"}}}}, img)
	return dirs
}

// agentRun starts the agent with conf, waits, and returns its RSS and
// RssAnon in MiB and the inferences its pipelines made, read from its
// metrics endpoint at addr (a model that never ran would measure
// nothing); any inference error fails the benchmark.
func agentRun(b *testing.B, bin, conf, addr string, wait time.Duration, env ...string) (rss, anon, inferences float64) {
	cmd := exec.Command(bin, "--config", conf)
	cmd.Env = append(os.Environ(), env...)
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	time.Sleep(wait)
	rss, anon, _ = rssMB(b, cmd.Process.Pid)
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		b.Fatalf("%s: metrics: %v", conf, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, line := range strings.Split(string(body), "\n") {
		f := strings.Fields(line)
		if len(f) != 2 {
			continue
		}
		v, _ := strconv.ParseFloat(f[1], 64)
		switch {
		case strings.HasPrefix(f[0], "outpost_agent_inferences_total{"):
			inferences += v
		case strings.HasPrefix(f[0], "outpost_agent_inference_errors_total{") && v > 0:
			b.Fatalf("%s: %s", conf, line)
		}
	}
	if inferences == 0 {
		b.Fatalf("%s: no inferences after %v", conf, wait)
	}
	return rss, anon, inferences
}

// loadSlotEnv names the model directory loadSlotHelper
// loads ("none": only the engine) and its engine.
const (
	loadSlotEnv       = "OUTPOST_FOOTPRINT_LOADSLOT"
	loadSlotEngineEnv = "OUTPOST_FOOTPRINT_ENGINE"
)

// loadSlotHelper is what a child of this test binary runs instead of
// the tests when loadSlotEnv is set (TestMain): BenchmarkAgentModelFootprint
// measures it. It loads a model through infer.LoadSlot (self-test
// included) and scores one row, then waits on stdin until it is killed.
func loadSlotHelper(dir string) error {
	cfg := infer.Config{Dir: dir, Engine: os.Getenv(loadSlotEngineEnv), Threads: 1}
	if cfg.UsesORT() {
		lib, err := ort.FindLibrary("") // the benchmark passes OUTPOST_ORT_LIB
		if err != nil {
			return err
		}
		if err := ort.Init(lib); err != nil {
			return err
		}
	}
	if dir != "none" {
		m, err := infer.LoadSlot(cfg, infer.Active, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			return err
		}
		defer m.Close()
		x := make([]float32, m.Manifest.RowWidth())
		for i := range x {
			x[i] = float32(i%255) / 255
		}
		if _, _, err := m.Infer(x); err != nil {
			return err
		}
	}
	fmt.Println("loadslot: ready")
	_, _ = io.Copy(io.Discard, os.Stdin) // until the benchmark kills it
	return nil
}

// loadSlotRun runs loadSlotHelper on dir and engine and
// returns its RSS and RssAnon in MiB once the model is loaded.
func loadSlotRun(b *testing.B, dir, engine string) (rss, anon float64) {
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), loadSlotEnv+"="+dir, loadSlotEngineEnv+"="+engine, "OUTPOST_ORT_LIB="+testenv.ORTLibrary(b))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { stdin.Close(); _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	ready := make(chan bool, 1)
	var seen []string
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if sc.Text() == "loadslot: ready" {
				ready <- true
				_, _ = io.Copy(io.Discard, stdout)
				return
			}
			seen = append(seen, sc.Text())
		}
		ready <- false
	}()
	select {
	case ok := <-ready:
		if !ok {
			b.Fatalf("loadslot helper on %s (%s): %s", dir, engine, strings.Join(seen, "\n"))
		}
	case <-time.After(60 * time.Second):
		b.Fatalf("loadslot helper on %s (%s): not ready", dir, engine)
	}
	time.Sleep(time.Second)
	rss, anon, _ = rssMB(b, cmd.Process.Pid)
	return rss, anon
}

// BenchmarkAgentModelFootprint reports the stripped agent's resident
// memory with each model loaded, on ONNX Runtime (ort, one intra-op
// thread) and on the pure-Go engine (go), after 7 s of its simulator
// pipeline (the model must have scored windows):
//
//   - small: BenchmarkAgentFootprint's logistic model on window
//     aggregates (10 sensors at 10 Hz, 1 s windows);
//   - seq: a 1-D CNN on a sequence input, vibration at 100 Hz in 2 s
//     windows (10 sensors), resampled onto 200 steps, 1 channel;
//   - img96: the ~1M-parameter 96×96 RGB CNN. This test binary
//     loads it through agent/infer.LoadSlot (self-test with its golden
//     vectors) and scores one frame in a fresh process of its own
//     (loadSlotHelper), metrics *_loadslot_*. That
//     process's RSS with the engine alone (ONNX Runtime initialised, or
//     nothing) is loadslot_base_*; the difference is the model's cost.
//
// rss_* is VmRSS, anon_* RssAnon (private memory; the rest is mapped
// files, shared and reclaimable). rss_idle_MiB is the agent with no
// pipeline, measured in the same run.
func BenchmarkAgentModelFootprint(b *testing.B) {
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
	models := footprintModels(b, filepath.Join(dir, "models"))
	ortEnv := "OUTPOST_ORT_LIB=" + testenv.ORTLibrary(b)

	common := "device: {id: footprint}\nhub: {url: \"tcp://127.0.0.1:1\"}\nlog: {level: error}\n"
	idle := filepath.Join(dir, "idle.yaml")
	os.WriteFile(idle, []byte(common+"metrics: {listen: \"\"}\ndata_dir: "+filepath.Join(dir, "idle")+"\n"), 0o644)
	pipelines := map[string]string{
		"small": `    source: {type: simulator, simulator: {sensors: 10, rate: 10}}
    decode: {key_field: sensor, time_field: ts, fields: [vibration]}
    window: {kind: tumbling, size: 1s}
    aggregations: [mean, max]
`,
		"seq": `    source: {type: simulator, simulator: {sensors: 10, rate: 100}}
    decode: {key_field: sensor, time_field: ts, fields: [vibration]}
    window: {kind: tumbling, size: 2s, max_out_of_order: 100ms}
    aggregations: [count]
`,
	}
	b.ResetTimer() // one measurement whatever b.N is, as BenchmarkAgentFootprint
	rssIdle, _, _ := runFor(b, bin, idle)
	b.ReportMetric(rssIdle, "rss_idle_MiB")
	for _, name := range []string{"small", "seq"} {
		for _, engine := range []string{"ort", "go"} {
			port, err := service.FreePort()
			if err != nil {
				b.Fatal(err)
			}
			model := "model: {dir: " + models[name] + ", threads: 1}"
			var env []string
			if engine == "go" {
				model = "model: {dir: " + models[name] + ", engine: go}"
			} else {
				env = append(env, ortEnv)
			}
			conf := filepath.Join(dir, name+"-"+engine+".yaml")
			os.WriteFile(conf, []byte(common+"metrics: {listen: \""+service.Addr(port)+"\"}\ndata_dir: "+filepath.Join(dir, name+"-"+engine)+
				"\npipelines:\n  - name: fp\n"+pipelines[name]+"    "+model+"\n"), 0o644)
			rss, anon, n := agentRun(b, bin, conf, service.Addr(port), 7*time.Second, env...)
			b.ReportMetric(rss, "rss_"+name+"_"+engine+"_MiB")
			b.ReportMetric(anon, "anon_"+name+"_"+engine+"_MiB")
			b.Logf("%s on %s: %.0f inferences", name, engine, n)
		}
	}
	for _, engine := range []string{"ort", "go"} {
		eng := map[string]string{"ort": "onnxruntime", "go": "go"}[engine]
		base, baseAnon := loadSlotRun(b, "none", eng)
		rss, anon := loadSlotRun(b, models["img96"], eng)
		b.ReportMetric(base, "loadslot_base_"+engine+"_MiB")
		b.ReportMetric(rss, "rss_img96_"+engine+"_loadslot_MiB")
		b.ReportMetric(rss-base, "rss_img96_"+engine+"_loadslot_delta_MiB")
		b.ReportMetric(anon-baseAnon, "anon_img96_"+engine+"_loadslot_delta_MiB")
	}
}
