package validate

import (
	"fmt"
	"slices"

	"github.com/outpost-edge/outpost/models/manifest"
)

// Pipeline is what an agent pipeline computes for its model, in the terms
// of its config. It lives here, beside the graph checks, so that what
// writes a device's config (firmware build) checks the same rule as the
// agent that runs it, without linking the agent.
type Pipeline struct {
	Images       bool     // an image source: frames, no windows
	Fields       []string // decode.fields
	Aggregations []string // aggregations
	RawSamples   bool     // windows keep their raw readings
}

// Feeds refuses a model that reads what p does not compute.
func (p Pipeline) Feeds(m *manifest.Manifest) error {
	ins := m.InputList()
	if p.Images {
		if len(ins) != 1 || ins[0].Kind != manifest.Image {
			return fmt.Errorf("model %s takes %s inputs; a pipeline with an image source needs a model with one image input", m.Name, ins[0].Kind)
		}
		return nil
	}
	for _, in := range ins {
		switch in.Kind {
		case manifest.Aggregates:
			for _, f := range in.Features {
				if !slices.Contains(p.Fields, f.Field) || !slices.Contains(p.Aggregations, f.Agg) {
					return fmt.Errorf("model %s needs %s.%s, which the pipeline does not aggregate", m.Name, f.Field, f.Agg)
				}
			}
		case manifest.Image:
			return fmt.Errorf("model %s takes images; it needs a pipeline with an image source", m.Name)
		}
	}
	for _, f := range m.RawFields() {
		if !slices.Contains(p.Fields, f) {
			return fmt.Errorf("model %s needs raw samples of %s, which the pipeline does not decode", m.Name, f)
		}
	}
	if len(m.RawFields()) > 0 && !p.RawSamples {
		return fmt.Errorf("model %s needs raw samples, which this pipeline started without; set window.raw_samples: true", m.Name)
	}
	return nil
}
