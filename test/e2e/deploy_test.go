package e2e

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/outpost-edge/outpost/firmware/bundle"
	"github.com/outpost-edge/outpost/models/manifest"
	"github.com/outpost-edge/outpost/models/onnx"
	"github.com/outpost-edge/outpost/test/fleettest"
	"github.com/outpost-edge/outpost/test/pki"
	"github.com/outpost-edge/outpost/test/testenv"
)

func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := testenv.Root()
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// checkConfig runs a daemon's --check-config and returns its exit code
// and output.
func checkConfig(t *testing.T, bin, conf string, env ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(bin, "--config", conf, "--check-config")
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), string(out)
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0, string(out)
}

// TestDeployConfigsPassCheckConfig runs every example config, and the hub
// config inside the Kubernetes manifests, through the daemons' own
// --check-config, the way an operator checks a config before a restart.
func TestDeployConfigsPassCheckConfig(t *testing.T) {
	root := repoRoot(t)
	dir := t.TempDir()
	bins := map[string]string{
		"agent": build(t, dir, "agent/cmd/outpost-agent", "outpost-agent"),
		"hub":   build(t, dir, "hub/cmd/outpost-hub", "outpost-hub"),
	}
	examples, _ := filepath.Glob(filepath.Join(root, "deploy", "examples", "*.yaml"))
	if len(examples) < 4 {
		t.Fatalf("only %d example configs", len(examples))
	}
	pems := productionPEMs(t, filepath.Join(dir, "etc"))
	models := exampleModels(t, filepath.Join(dir, "models"), build(t, dir, "deploy/scripts/demomodel", "demomodel"))
	for _, f := range examples {
		daemon := "hub"
		if strings.HasPrefix(filepath.Base(f), "agent") {
			daemon = "agent"
		}
		f = withPEMs(t, f, dir, pems)
		if daemon == "agent" {
			f = withModels(t, f, models)
		}
		if code, out := checkConfig(t, bins[daemon], f); code != 0 || !strings.Contains(out, "configuration OK") {
			t.Errorf("%s: outpost-%s --check-config exit %d:\n%s", filepath.Base(f), daemon, code, out)
		}
	}

	// The agent's check reads the model packages: the demo's health model
	// where the pump's sequence CNN belongs is named by its field.
	misfit := filepath.Join(dir, "misfit.yaml")
	example, _ := os.ReadFile(filepath.Join(root, "deploy", "examples", "agent.yaml"))
	os.WriteFile(misfit, []byte(strings.ReplaceAll(string(example), "/var/lib/outpost/models/pump-cnn", models["./data/agent/models/health"])), 0o644)
	if code, out := checkConfig(t, bins["agent"], withPEMs(t, misfit, dir, pems)); code != 2 || !regexp.MustCompile(`pipelines\[\d+\]\.model: model health needs vibration\.max, which the pipeline does not aggregate`).MatchString(out) {
		t.Errorf("the health model in the pump's pipeline: exit %d:\n%s", code, out)
	}

	// The check can fail: a wrong field is named by its path.
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("broker:\n  mqtt_port: 99999\n"), 0o644)
	if code, out := checkConfig(t, bins["hub"], bad); code == 0 || !strings.Contains(out, "broker.mqtt_port") {
		t.Errorf("a bad hub config: exit %d:\n%s", code, out)
	}

	cm := kubeDoc(t, "ConfigMap", "outpost-hub")
	data, _ := cm["data"].(map[string]any)
	hubYAML, _ := data["hub.yaml"].(string)
	kf := filepath.Join(dir, "k8s-hub.yaml")
	os.WriteFile(kf, []byte(hubYAML), 0o644)
	// What the StatefulSet's env adds: the pod name and the secret.
	env := []string{"OUTPOST_HUB_BROKER_SERVER_NAME=outpost-hub-1", "OUTPOST_HUB_BROKER_CLUSTER_SECRET=0123456789abcdef0123456789abcdef", "OUTPOST_HUB_HTTP_ADMIN_TOKEN=s3cret-admin"}
	if code, out := checkConfig(t, bins["hub"], kf, env...); code != 0 || !strings.Contains(out, "configuration OK") {
		t.Errorf("the Kubernetes hub config: exit %d:\n%s", code, out)
	}
}

// kubeDoc finds one object in deploy/kubernetes/hub.yaml.
func kubeDoc(t *testing.T, kind, name string) map[string]any {
	t.Helper()
	f, err := os.Open(filepath.Join(repoRoot(t), "deploy", "kubernetes", "hub.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec := yaml.NewDecoder(f)
	for {
		var doc map[string]any
		if err := dec.Decode(&doc); err != nil {
			break
		}
		md, _ := doc["metadata"].(map[string]any)
		if doc["kind"] == kind && md["name"] == name {
			return doc
		}
	}
	t.Fatalf("no %s %s in deploy/kubernetes/hub.yaml", kind, name)
	return nil
}

func path(doc map[string]any, keys ...string) any {
	var cur any = doc
	for _, k := range keys {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = m[k]
	}
	return cur
}

// TestKubernetesHubIsAThreeReplicaCluster checks the manifest's wiring:
// three replicas whose routes name each other through the headless
// service, secrets from one Secret, and the ports the config listens on.
func TestKubernetesHubIsAThreeReplicaCluster(t *testing.T) {
	sts := kubeDoc(t, "StatefulSet", "outpost-hub")
	if r := path(sts, "spec", "replicas"); r != 3 {
		t.Fatalf("replicas %v, want 3", r)
	}
	svc := path(sts, "spec", "serviceName").(string)
	headless := kubeDoc(t, "Service", svc)
	if path(headless, "spec", "clusterIP") != "None" {
		t.Fatalf("service %s is not headless", svc)
	}
	var hub struct {
		Broker struct {
			NATSPort int `yaml:"nats_port"`
			MQTTPort int `yaml:"mqtt_port"`
			Cluster  struct {
				Port   int      `yaml:"port"`
				Routes []string `yaml:"routes"`
			} `yaml:"cluster"`
		} `yaml:"broker"`
		Ingest struct {
			Replicas int `yaml:"replicas"`
		} `yaml:"ingest"`
	}
	cm := kubeDoc(t, "ConfigMap", "outpost-hub")
	if err := yaml.Unmarshal([]byte(path(cm, "data", "hub.yaml").(string)), &hub); err != nil {
		t.Fatal(err)
	}
	ns := path(sts, "metadata", "namespace").(string)
	for i := 0; i < 3; i++ {
		want := "outpost-hub-" + string(rune('0'+i)) + "." + svc + "." + ns + ".svc.cluster.local:6222"
		if i >= len(hub.Broker.Cluster.Routes) || hub.Broker.Cluster.Routes[i] != want {
			t.Errorf("route %d: %v, want %s", i, hub.Broker.Cluster.Routes, want)
		}
	}
	if hub.Ingest.Replicas != 3 {
		t.Errorf("ingest.replicas %d, want 3", hub.Ingest.Replicas)
	}
	containers := path(sts, "spec", "template", "spec", "containers").([]any)
	c := containers[0].(map[string]any)
	ports := map[int]bool{}
	for _, p := range c["ports"].([]any) {
		ports[p.(map[string]any)["containerPort"].(int)] = true
	}
	for _, p := range []int{hub.Broker.MQTTPort, hub.Broker.NATSPort, hub.Broker.Cluster.Port, 8080} {
		if !ports[p] {
			t.Errorf("container does not expose port %d", p)
		}
	}
	envNames := map[string]bool{}
	for _, e := range c["env"].([]any) {
		envNames[e.(map[string]any)["name"].(string)] = true
	}
	for _, n := range []string{"OUTPOST_HUB_BROKER_SERVER_NAME", "OUTPOST_HUB_BROKER_CLUSTER_SECRET", "OUTPOST_HUB_HTTP_ADMIN_TOKEN"} {
		if !envNames[n] {
			t.Errorf("container env lacks %s", n)
		}
	}
}

// unitExec reads ExecStart= of a systemd unit.
func unitExec(t *testing.T, file string) []string {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "ExecStart="); ok {
			return strings.Fields(v)
		}
	}
	t.Fatalf("%s has no ExecStart", file)
	return nil
}

// TestUnitsAndContainerfileMatchTheLayout: the units start the binaries
// where bundles and installers put them, and the container file copies
// files that exist and builds packages that exist.
func TestUnitsAndContainerfileMatchTheLayout(t *testing.T) {
	root := repoRoot(t)
	agent := unitExec(t, filepath.Join(root, "firmware", "build", "outpost-agent.service"))
	if agent[0] != "/"+bundle.AgentPath || agent[1] != "--config" || agent[2] != "/"+bundle.ConfigPath {
		t.Errorf("agent unit runs %v, bundles install /%s and /%s", agent, bundle.AgentPath, bundle.ConfigPath)
	}
	hub := unitExec(t, filepath.Join(root, "deploy", "systemd", "outpost-hub.service"))
	if filepath.Base(hub[0]) != "outpost-hub" || hub[1] != "--config" {
		t.Errorf("hub unit runs %v", hub)
	}
	cf, err := os.ReadFile(filepath.Join(root, "deploy", "container", "Containerfile"))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range regexp.MustCompile(`(?m)^COPY (?:--from=\S+ )?(\S+) `).FindAllStringSubmatch(string(cf), -1) {
		if strings.HasPrefix(m[0], "COPY --from") || m[1] == "." {
			continue
		}
		if _, err := os.Stat(filepath.Join(root, m[1])); err != nil {
			t.Errorf("Containerfile copies %s: %v", m[1], err)
		}
	}
	for _, m := range regexp.MustCompile(`\./(hub/cmd/\S+)`).FindAllStringSubmatch(string(cf), -1) {
		if _, err := os.Stat(filepath.Join(root, m[1], "main.go")); err != nil {
			t.Errorf("Containerfile builds %s: %v", m[1], err)
		}
	}
}

// pemPath is a certificate or key path of the production examples.
var pemPath = regexp.MustCompile(`/etc/outpost[-a-z]*/[A-Za-z0-9._/-]+\.pem`)

// productionPEMs issues what the production examples' TLS settings name:
// a CA, and a server certificate and its key, in dir.
func productionPEMs(t *testing.T, dir string) map[string]string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	ca, err := pki.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	cert, key, err := ca.Issue("hub.example", true)
	if err != nil {
		t.Fatal(err)
	}
	return map[string]string{"ca": ca.CAFile, "cert": cert, "key": key}
}

// withPEMs copies an example config with its /etc paths pointing at real
// files of the same kind, as they are on an installed hub or device: the
// check reads them.
func withPEMs(t *testing.T, conf, dir string, pems map[string]string) string {
	t.Helper()
	data, err := os.ReadFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	out := pemPath.ReplaceAllStringFunc(string(data), func(p string) string {
		base := filepath.Base(p)
		switch {
		case strings.Contains(base, "key"):
			return pems["key"]
		case strings.Contains(base, "ca"):
			return pems["ca"]
		}
		return pems["cert"]
	})
	copied := filepath.Join(dir, filepath.Base(conf))
	if err := os.WriteFile(copied, []byte(out), 0o644); err != nil {
		t.Fatal(err)
	}
	return copied
}

// exampleModels writes, for every model dir the example agent configs
// name, a package that fits its pipeline, and maps the example's dir to
// it: the demo's own health model (what demo.sh installs), a 1-D CNN on
// 2 s of the pump's three axes at 100 Hz, and an image CNN for the gate
// camera.
func exampleModels(t *testing.T, dir, demomodel string) map[string]string {
	t.Helper()
	out := map[string]string{}
	health := filepath.Join(dir, "health")
	if b, err := exec.Command(demomodel, health).CombinedOutput(); err != nil {
		t.Fatalf("demomodel: %v\n%s", err, b)
	}
	out["./data/agent/models/health"] = health

	cnn, err := onnx.CNN1D("wave", 3, 200, 8, 5, 3)
	if err != nil {
		t.Fatal(err)
	}
	pump := filepath.Join(dir, "pump-cnn")
	fleettest.WritePackage(t, pump, &manifest.Manifest{Name: "pump-cnn", Version: 1, Task: "anomaly", Outputs: manifest.Outputs{Threshold: 0.5},
		Inputs: []manifest.Input{{Name: "wave", Kind: manifest.Sequence, Sequence: &manifest.SequenceSpec{Fields: []string{"ax", "ay", "az"}, Steps: 200, Layout: "NCT"}}}}, cnn)
	out["/var/lib/outpost/models/pump-cnn"] = pump

	img, err := onnx.CNN2D("frame", 32, 8, 2, 11)
	if err != nil {
		t.Fatal(err)
	}
	gate := filepath.Join(dir, "gate-cnn")
	fleettest.WritePackage(t, gate, &manifest.Manifest{Name: "gate-cnn", Version: 1, Task: "classification", Outputs: manifest.Outputs{Labels: []string{"closed", "open"}},
		Inputs: []manifest.Input{{Name: "frame", Kind: manifest.Image, Image: &manifest.ImageSpec{Width: 32, Height: 32, Channels: "RGB"}}}}, img)
	out["/var/lib/outpost/models/gate-cnn"] = gate
	return out
}

// withModels points an example agent config's model dirs at the packages
// of exampleModels. A dir without one fails the test: a new example model
// needs a package here that proves it fits.
func withModels(t *testing.T, conf string, models map[string]string) string {
	t.Helper()
	data, err := os.ReadFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Pipelines []struct {
			Name  string `yaml:"name"`
			Model *struct {
				Dir string `yaml:"dir"`
			} `yaml:"model"`
		} `yaml:"pipelines"`
	}
	if err := yaml.Unmarshal(data, &cfg); err != nil {
		t.Fatal(err)
	}
	text := string(data)
	for _, p := range cfg.Pipelines {
		if p.Model == nil {
			continue
		}
		pkg, ok := models[p.Model.Dir]
		if !ok {
			t.Errorf("%s: pipeline %s names model dir %s, for which the test has no package", filepath.Base(conf), p.Name, p.Model.Dir)
			continue
		}
		text = strings.ReplaceAll(text, p.Model.Dir, pkg)
	}
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return conf
}
