package manifest

// Interpret turns one row's scores into a label and whether the row is
// flagged, as the agent reports them: anomaly (and a classifier with one
// score) compares the first score with the threshold, reading two labels
// as below / at or above it; a classifier otherwise takes the argmax, and
// any class but the first is positive. Regression has neither.
func (o Outputs) Interpret(task string, scores []float32) (label string, positive bool) {
	if len(scores) == 0 {
		return "", false
	}
	switch {
	case task == "anomaly" || task == "classification" && len(scores) == 1:
		pos := float64(scores[0]) >= o.Threshold
		if len(o.Labels) == 2 {
			if pos {
				return o.Labels[1], true
			}
			return o.Labels[0], false
		}
		return "", pos
	case task == "classification":
		best := 0
		for i, s := range scores {
			if s > scores[best] {
				best = i
			}
		}
		if best < len(o.Labels) {
			return o.Labels[best], best != 0
		}
		return "", best != 0
	}
	return "", false
}
