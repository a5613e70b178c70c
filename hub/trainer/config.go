package trainer

import (
	"fmt"
	"time"

	"github.com/outpost-edge/outpost/deploy/config"
)

// Config is the hub's `trainer` section.
type Config struct {
	// Models are retrained from the fleet's labelled windows (file only).
	Models   []ModelConfig `yaml:"models"`
	JoinWait time.Duration `yaml:"join_wait" usage:"how long a window waits for its label, and a label for its window"`
}

// ModelConfig is one retrained model.
type ModelConfig struct {
	Model    string `yaml:"model"`    // registry name; its production version is the champion
	Pipeline string `yaml:"pipeline"` // windows of this pipeline feed it
	// LabelField takes the class from the window itself ("anomaly.max":
	// positive when ≥ 0.5); empty joins `labels` records instead.
	LabelField   string  `yaml:"label_field"`
	Optimizer    string  `yaml:"optimizer"` // adam (default) or sgd
	LearningRate float64 `yaml:"learning_rate"`
	Holdout      int     `yaml:"holdout"` // labelled rows a candidate is judged on
	Margin       float64 `yaml:"margin"`  // accuracy it must win by
	Every        int     `yaml:"every"`   // a check after this many new labelled rows (0: none)
	// Schedule starts a check this often whatever else happens (0: none).
	Schedule time.Duration `yaml:"schedule"`
	Replay   int           `yaml:"replay"` // rows in the replay buffer
	Quantize string        `yaml:"quantize"`
	Canary   bool          `yaml:"canary"` // roll each release out to one device
	// CohortLabel watches production's errors per value of this device
	// label (site, hardware revision, ...) with detectors of their own.
	CohortLabel string            `yaml:"cohort_label"`
	Select      map[string]string `yaml:"select"` // devices the canary may go to
}

// Defaults: labels wait two minutes.
func Defaults() Config { return Config{JoinWait: 2 * time.Minute} }

// Validate names wrong fields under path.
func (c Config) Validate(path string, errs *config.Errors) {
	if c.JoinWait <= 0 {
		errs.Add(path+".join_wait", "must be positive")
	}
	seen := map[string]bool{}
	for i, m := range c.Models {
		p := fmt.Sprintf("%s.models[%d]", path, i)
		switch {
		case m.Model == "":
			errs.Add(p+".model", "required")
		case seen[m.Model]:
			errs.Add(p+".model", "listed twice")
		}
		seen[m.Model] = true
		if m.Pipeline == "" {
			errs.Add(p+".pipeline", "required")
		}
		if m.Optimizer != "" && m.Optimizer != "adam" && m.Optimizer != "sgd" {
			errs.Add(p+".optimizer", fmt.Sprintf("must be adam or sgd, got %q", m.Optimizer))
		}
		if m.Holdout < 0 || m.Every < 0 || m.Schedule < 0 || m.Replay < 0 || m.LearningRate < 0 || m.Margin < 0 || m.Margin > 1 {
			errs.Add(p, "holdout, every, replay and learning_rate must not be negative; margin is 0 to 1")
		}
		switch m.Quantize {
		case "", "none", "int8-static", "int8-dynamic", "fp16":
		default:
			errs.Add(p+".quantize", fmt.Sprintf("must be int8-static, int8-dynamic, fp16 or none, got %q", m.Quantize))
		}
	}
}
