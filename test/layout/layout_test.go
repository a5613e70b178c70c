// Package layout checks the rules of the repository's shape that the design
// sets and the README promises.
package layout

import (
	"errors"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/outpost-edge/outpost/agent"
	"github.com/outpost-edge/outpost/deploy/config"
	"github.com/outpost-edge/outpost/hub"
	"github.com/outpost-edge/outpost/test/testenv"
)

func root(t *testing.T) string {
	t.Helper()
	r, err := testenv.Root()
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestAgentLinksNoHubDependencies keeps the device binary small: the
// broker, Kafka client and training stack belong to the hub only.
func TestAgentLinksNoHubDependencies(t *testing.T) {
	cmd := exec.Command("go", "list", "-deps", "./agent/cmd/outpost-agent")
	cmd.Dir = root(t)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, banned := range []string{"github.com/nats-io/nats-server", "github.com/twmb/franz-go", "gorgonia.org/", "/hub"} {
		for _, pkg := range strings.Fields(string(out)) {
			if strings.Contains(pkg, banned) {
				t.Errorf("outpost-agent links %s", pkg)
			}
		}
	}
}

// TestCLILinksNoServerPackage keeps outpostctl a client: it shares the
// API's types (hub/api, sync/state) and links no broker, Kafka client,
// learner or other hub package, so it builds small and without cgo for an
// operator's laptop (make nocgo).
func TestCLILinksNoServerPackage(t *testing.T) {
	cmd := exec.Command("go", "list", "-deps", "./hub/cmd/outpostctl")
	cmd.Dir = root(t)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	allowed := map[string]bool{"hub/api": true, "hub/ctl": true, "hub/cmd/outpostctl": true}
	for _, pkg := range strings.Fields(string(out)) {
		for _, banned := range []string{"github.com/nats-io/", "github.com/twmb/franz-go", "gorgonia.org/", "github.com/mattn/go-sqlite3"} {
			if strings.Contains(pkg, banned) {
				t.Errorf("outpostctl links %s", pkg)
			}
		}
		if rest, ok := strings.CutPrefix(pkg, "github.com/outpost-edge/outpost/hub/"); ok && !allowed["hub/"+rest] {
			t.Errorf("outpostctl links the server package %s (its types belong in hub/api)", pkg)
		}
	}
}

// TestLeavesDoNotImportDaemons enforces the one-way import rule.
func TestLeavesDoNotImportDaemons(t *testing.T) {
	cmd := exec.Command("go", "list", "-f", `{{.ImportPath}} {{join .Imports " "}}`,
		"./models/...", "./quant/...", "./sync/...", "./firmware/...", "./deploy/...")
	cmd.Dir = root(t)
	out, _ := cmd.CombinedOutput() // empty folders make go list complain; the lines still come
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 || !strings.HasPrefix(f[0], "github.com/outpost-edge/outpost/") {
			continue
		}
		for _, imp := range f[1:] {
			if strings.HasPrefix(imp, "github.com/outpost-edge/outpost/agent") || strings.HasPrefix(imp, "github.com/outpost-edge/outpost/hub") {
				t.Errorf("leaf %s imports daemon package %s", f[0], imp)
			}
		}
	}
}

func TestTopLevel(t *testing.T) {
	allowed := map[string]bool{
		"agent": true, "hub": true, "models": true, "sync": true, "quant": true, "firmware": true,
		"deploy": true, "test": true, "go.mod": true, "go.sum": true, "Makefile": true,
		"README.md": true, "docs": true, ".ci": true, ".gitignore": true,
	}
	cmd := exec.Command("git", "ls-files")
	cmd.Dir = root(t)
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, f := range strings.Fields(string(out)) {
		seen[strings.SplitN(f, "/", 2)[0]] = true
	}
	for top := range seen {
		if !allowed[top] {
			t.Errorf("unexpected top-level entry %q", top)
		}
	}
}

// TestReadmeDocumentsEveryConfigKey keeps the configuration reference true
// to the code: every key a daemon accepts appears in the README.
func TestReadmeDocumentsEveryConfigKey(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join(root(t), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	for name, cfg := range map[string]any{"outpost-agent": agent.Defaults(), "outpost-hub": hub.Defaults()} {
		section := readmeSection(string(readme), "### "+name)
		if section == "" {
			t.Fatalf("README has no section %q", "### "+name)
		}
		l := config.NewLoader("X", cfg, flag.NewFlagSet(name, flag.ContinueOnError))
		var missing []string
		for _, p := range l.Paths() {
			if !strings.Contains(section, "| `"+p+"` |") {
				missing = append(missing, p)
			}
		}
		sort.Strings(missing)
		if len(missing) > 0 {
			t.Errorf("README section %s lacks keys: %v", name, missing)
		}
	}
}

// TestExampleConfigsAreValid loads deploy/examples with the daemons' rules.
// The production examples name certificates and keys under /etc/outpost*
// that exist only on a provisioned machine: that those are missing here
// is the one error let through.
func TestExampleConfigsAreValid(t *testing.T) {
	for file, cfg := range map[string]interface{ Validate() error }{
		"agent.yaml":       agent.Defaults(),
		"agent-demo.yaml":  agent.Defaults(),
		"hub.yaml":         hub.Defaults(),
		"hub-cluster.yaml": hub.Defaults(),
	} {
		l := config.NewLoader("X", cfg, flag.NewFlagSet(file, flag.ContinueOnError))
		if err := l.Load(cfg, filepath.Join(root(t), "deploy", "examples", file), nil); err != nil {
			t.Errorf("%s: %v", file, err)
			continue
		}
		if err := provisioned(cfg.Validate()); err != nil {
			t.Errorf("%s: %v", file, err)
		}
	}
}

// provisioned drops the errors of files under /etc/outpost* that do not
// exist on this machine.
func provisioned(err error) error {
	var es config.Errors
	if !errors.As(err, &es) {
		return err
	}
	var left config.Errors
	for _, e := range es {
		if strings.HasSuffix(e.Path, "_file") && strings.Contains(e.Reason, " /etc/outpost") && strings.Contains(e.Reason, "no such file") {
			continue
		}
		left = append(left, e)
	}
	return left.Err()
}

func readmeSection(doc, heading string) string {
	i := strings.Index(doc, heading+"\n")
	if i < 0 {
		return ""
	}
	rest := doc[i+len(heading):]
	if j := strings.Index(rest, "\n#"); j >= 0 {
		rest = rest[:j]
	}
	return rest
}

// TestDepsAreCached runs the bootstrap again, as a second `make test` does:
// everything must be found in the cache and nothing fetched.
func TestDepsAreCached(t *testing.T) {
	cmd := exec.Command("deploy/scripts/deps.sh", "apt", "ort", "kafka")
	cmd.Dir = root(t)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("deps.sh: %v\n%s", err, out)
	}
	for _, want := range []string{"apt packages present", "onnxruntime " + testenv.ORTVersion + " present", "kafka " + testenv.KafkaVersion + " present"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("deps.sh output lacks %q (it downloaded again?):\n%s", want, out)
		}
	}
}
