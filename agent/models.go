package agent

import (
	"errors"
	"fmt"
	"io/fs"

	"github.com/outpost-edge/outpost/agent/pipeline"
	"github.com/outpost-edge/outpost/agent/update"
	"github.com/outpost-edge/outpost/deploy/config"
	"github.com/outpost-edge/outpost/models/manifest"
)

// CheckModels reads every pipeline's model package and checks that the
// pipeline computes what the model reads. It is file I/O, kept out of
// Validate (which judges a config on any machine); the agent's main runs
// it after Validate at --check-config and before Run, so that a device
// refuses a model it could not start with before it spends its
// enrolment token, naming the field.
func (c *Config) CheckModels() error {
	var errs config.Errors
	for i, p := range c.Pipelines {
		if p.Model == nil || p.Model.Dir == "" {
			continue // Validate names an empty dir
		}
		if field, reason := checkModel(p); reason != "" {
			errs.Add(fmt.Sprintf("pipelines[%d].%s", i, field), reason)
		}
	}
	return errs.Err()
}

// checkModel accepts the model dir when any package the pipeline may start
// with fits; otherwise it names what is wrong with the first, the one the
// pipeline loads.
func checkModel(p pipeline.Config) (field, reason string) {
	for i, dir := range update.StartPackages(p.Model.Dir) {
		f, r := "", ""
		m, _, err := manifest.Load(dir)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			f, r = "model.dir", fmt.Sprintf("no model package in %s: %v", p.Model.Dir, err)
		case err != nil:
			f, r = "model.dir", fmt.Sprintf("model package %s: %v", dir, err)
		default:
			if err := p.CheckModel(m); err != nil {
				f, r = "model", err.Error()
			}
		}
		if r == "" {
			return "", ""
		}
		if i == 0 {
			field, reason = f, r
		}
	}
	return field, reason
}
