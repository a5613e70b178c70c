package pipeline

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/firmware/bundle"
	"github.com/outpost-edge/outpost/firmware/enrol"
	"github.com/outpost-edge/outpost/hub/ctl"
	"github.com/outpost-edge/outpost/sync/state"
	"github.com/outpost-edge/outpost/test/kafkatest"
	"github.com/outpost-edge/outpost/test/service"
	"github.com/outpost-edge/outpost/test/testenv"
)

// mustCtl runs outpostctl in-process and fails the test unless it succeeds.
func mustCtl(t *testing.T, args ...string) string {
	t.Helper()
	var out, errOut bytes.Buffer
	if rc := ctl.Main(context.Background(), args, &out, &errOut); rc != 0 {
		t.Fatalf("outpostctl %s: rc %d\n%s%s", strings.Join(args, " "), rc, out.String(), errOut.String())
	}
	return out.String()
}

// flashedAgent runs the agent a bundle installed into root, as an arm64
// binary under qemu. The config is the one the bundle shipped; only its
// absolute paths are redirected into root, through the environment.
func flashedAgent(t *testing.T, root string) *exec.Cmd {
	t.Helper()
	qemu, err := exec.LookPath("qemu-aarch64-static")
	if err != nil {
		t.Fatalf("qemu-aarch64-static not installed; run `make deps`: %v", err)
	}
	port, _ := service.FreePort()
	in := func(p string) string { return filepath.Join(root, p) }
	cmd := exec.Command(qemu, "-L", "/usr/aarch64-linux-gnu", in(bundle.AgentPath), "--config", in(bundle.ConfigPath))
	cmd.Env = append(os.Environ(),
		"OUTPOST_AGENT_DATA_DIR="+in(bundle.DataDir),
		"OUTPOST_AGENT_ENROLMENT_TOKEN_FILE="+in(bundle.TokenPath),
		"OUTPOST_AGENT_UPDATES_TRUSTED_ROOT="+in(bundle.RootPath),
		"OUTPOST_AGENT_RUNTIME_ONNXRUNTIME_LIBRARY="+in(bundle.LibDir+"/libonnxruntime.so.1"),
		"OUTPOST_AGENT_METRICS_LISTEN="+service.Addr(port),
	)
	return cmd
}

// TestArm64BundleEnrolsAndStreamsUnderQemu is the installer's path end to
// end: build the arm64 bundle (cross-compiled agent, arm64 ONNX Runtime,
// config, unit, trusted root), flash it into a directory root with a
// one-time token, run the flashed agent under qemu-aarch64 against a hub
// on loopback, and watch it enrol and send windows that reach Kafka. The
// device refuses a tampered bundle and a reused token.
func TestArm64BundleEnrolsAndStreamsUnderQemu(t *testing.T) {
	brokers := kafkatest.Brokers(t)
	cfg := hubConfig(t, brokers, t.TempDir())
	h := startHub(t, cfg)
	defer h.Close()
	hubURL := "http://" + h.HTTPAddr()
	src, err := testenv.Root()
	if err != nil {
		t.Fatal(err)
	}

	work := t.TempDir()
	mustCtl(t, "firmware", "keygen", "--dir", filepath.Join(work, "keys"))
	resp, err := http.Get(hubURL + "/tuf/1.root.json")
	if err != nil {
		t.Fatal(err)
	}
	rootJSON, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("hub root: %s", resp.Status)
	}
	os.WriteFile(filepath.Join(work, "root.json"), rootJSON, 0o644)
	pipelines := `- name: vibration
  source: {type: simulator, simulator: {sensors: 3, rate: 50}}
  decode: {key_field: sensor, time_field: ts, fields: [vibration, temperature], max_skew: 1h}
  window: {kind: tumbling, size: 1s, max_out_of_order: 200ms, idle_timeout: 5s}
  aggregations: [count, mean, max]
`
	os.WriteFile(filepath.Join(work, "pipelines.yaml"), []byte(pipelines), 0o644)
	bundleFile := filepath.Join(work, "outpost-arm64.bundle")
	mustCtl(t, "firmware", "build", "--arch", "arm64", "--source", src, "--version", "9.9.9-bundle",
		"--key", filepath.Join(work, "keys/bundle.key"), "--root", filepath.Join(work, "root.json"),
		"--hub-url", hubURL, "--mqtt-url", "tcp://"+h.MQTTAddr(), "--pipelines", filepath.Join(work, "pipelines.yaml"),
		"--out", bundleFile)

	token := issueToken(t, h, "--label", "site=lab-3")
	root := filepath.Join(work, "device-1")
	os.MkdirAll(root, 0o755)
	pub := filepath.Join(work, "keys/bundle.pub")
	out := mustCtl(t, "--hub", hubURL, "firmware", "flash", "--bundle", bundleFile, "--pubkey", pub, "--target", root, "--token", token)
	if !strings.Contains(out, "verified 100%") || !strings.Contains(out, "service enabled") {
		t.Fatalf("flash output:\n%s", out)
	}
	if out := mustCtl(t, "firmware", "flash", "--bundle", bundleFile, "--pubkey", pub, "--target", root, "--token", token); !strings.Contains(out, " 0 files written") {
		t.Fatalf("second flash wrote files:\n%s", out)
	}

	// The config the bundle shipped passes the flashed agent's own check.
	check := flashedAgent(t, root)
	check.Args = append(check.Args, "--check-config")
	if out, err := check.CombinedOutput(); err != nil || !strings.Contains(string(out), "configuration OK") {
		t.Fatalf("flashed agent --check-config: %v\n%s", err, out)
	}

	agentCmd := flashedAgent(t, root)
	var agentLog bytes.Buffer
	agentCmd.Stdout, agentCmd.Stderr = &agentLog, &agentLog
	service.DiesWithTest(agentCmd)
	if err := agentCmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		agentCmd.Process.Signal(os.Interrupt)
		agentCmd.Wait()
		if t.Failed() {
			t.Logf("flashed agent log:\n%s", agentLog.String())
		}
	}()

	// Enrolment: the device wrote its credentials and the hub knows it by key.
	var e state.Enrolment
	deadline := time.Now().Add(60 * time.Second)
	for {
		data, err := os.ReadFile(filepath.Join(root, bundle.DataDir, enrol.CredentialsFile))
		if err == nil && json.Unmarshal(data, &e) == nil && e.Device != "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the flashed agent did not enrol within 60s")
		}
		time.Sleep(200 * time.Millisecond)
	}
	if !strings.HasPrefix(e.Device, "dev-") || e.Labels["arch"] != "arm64" || e.Labels["site"] != "lab-3" || e.Labels["accelerator"] != "cpu" {
		t.Fatalf("enrolled as %s with labels %v, want a key-derived id and arch, site, accelerator", e.Device, e.Labels)
	}
	if _, err := os.Stat(filepath.Join(root, bundle.TokenPath)); !os.IsNotExist(err) {
		t.Fatalf("the spent token is still on the device: %v", err)
	}

	// Windows from the arm64 agent reach Kafka, under its enrolled id.
	recs, _ := readAgentRecords(t, brokers, []string{cfg.Kafka.TopicPrefix + "windows"}, 5, 90*time.Second)
	n := 0
	for _, r := range recs {
		if r.Device == e.Device {
			n++
		}
	}
	if n < 5 {
		t.Fatalf("%d window records from %s in Kafka, want at least 5", n, e.Device)
	}
	t.Logf("arm64 device %s enrolled with labels %v; %d windows in Kafka", e.Device, e.Labels, n)

	t.Run("a tampered bundle is refused before anything is written", func(t *testing.T) {
		data, _ := os.ReadFile(bundleFile)
		data[len(data)/3] ^= 0x01
		bad := filepath.Join(work, "tampered.bundle")
		os.WriteFile(bad, data, 0o644)
		target := filepath.Join(work, "device-tampered")
		os.MkdirAll(target, 0o755)
		var o, eo bytes.Buffer
		if rc := ctl.Main(context.Background(), []string{"firmware", "flash", "--bundle", bad, "--pubkey", pub, "--target", target}, &o, &eo); rc == 0 {
			t.Fatal("flashing a tampered bundle succeeded")
		}
		if !strings.Contains(eo.String(), "refusing") {
			t.Fatalf("refusal does not say so: %s", eo.String())
		}
		if entries, _ := os.ReadDir(target); len(entries) != 0 {
			t.Fatalf("a tampered bundle wrote %d entries", len(entries))
		}
	})

	t.Run("a second device with the same token is refused", func(t *testing.T) {
		root2 := filepath.Join(work, "device-2")
		os.MkdirAll(root2, 0o755)
		mustCtl(t, "firmware", "flash", "--bundle", bundleFile, "--pubkey", pub, "--target", root2, "--token", token)
		cmd := flashedAgent(t, root2)
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		cmd = exec.CommandContext(ctx, cmd.Path, cmd.Args[1:]...)
		cmd.Env = flashedAgent(t, root2).Env
		out, err := cmd.CombinedOutput()
		if err == nil || ctx.Err() != nil {
			t.Fatalf("agent with a reused token: %v (ctx %v)\n%s", err, ctx.Err(), out)
		}
		if !strings.Contains(string(out), "already used") {
			t.Fatalf("the refusal does not say why:\n%s", out)
		}
		if _, err := os.Stat(filepath.Join(root2, bundle.DataDir, enrol.CredentialsFile)); !os.IsNotExist(err) {
			t.Fatal("a refused device has credentials")
		}
	})
}
