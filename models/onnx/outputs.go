package onnx

import (
	"fmt"
	"strings"
)

// ScoresOutput picks the graph output that holds scores or probabilities:
// the one named want, or else the graph's only output, or else its only
// FLOAT output (skl2onnx classifiers write an int64 label, then the
// probabilities). Both engines and validation use this one rule, so a
// manifest that names no output means the same graph output everywhere.
func ScoresOutput(outputs []Tensor, want string) (Tensor, error) {
	if want != "" {
		for _, o := range outputs {
			if o.Name == want {
				return o, nil
			}
		}
		return Tensor{}, fmt.Errorf("%w: no output named %q (the graph has %s)", ErrOutput, want, names(outputs))
	}
	if len(outputs) == 1 {
		return outputs[0], nil
	}
	var floats []Tensor
	for _, o := range outputs {
		if o.Kind == "" && o.Type == "FLOAT" {
			floats = append(floats, o)
		}
	}
	if len(floats) != 1 {
		return Tensor{}, fmt.Errorf("%w: %d float outputs among %s; name the scores one in the manifest's outputs.scores", ErrOutput, len(floats), names(outputs))
	}
	return floats[0], nil
}

func names(ts []Tensor) string {
	var s []string
	for _, t := range ts {
		s = append(s, t.Name)
	}
	return "[" + strings.Join(s, ", ") + "]"
}
