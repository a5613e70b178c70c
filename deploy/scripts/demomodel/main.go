// Command demomodel writes the model `make demo` starts from: "health"
// version 1, a logistic anomaly model fit to the simulator before its
// concept drift (a window is anomalous when its peak vibration is above
// 1.0). After the drift normal windows peak near 1.1, v1 raises false
// alarms, and the hub's trainer retrains it.
//
//	go run ./deploy/scripts/demomodel DIR
package main

import (
	"fmt"
	"os"

	"github.com/outpost-edge/outpost/models/goengine"
	"github.com/outpost-edge/outpost/models/manifest"
	"github.com/outpost-edge/outpost/models/onnx"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: demomodel DIR")
		os.Exit(2)
	}
	if err := write(os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, "demomodel:", err)
		os.Exit(1)
	}
}

func write(dir string) error {
	model, err := onnx.Logistic([][]float32{{8, 0}}, []float32{0})
	if err != nil {
		return err
	}
	eng, err := goengine.Load(model)
	if err != nil {
		return err
	}
	golden := []float32{0.5, 0.1}
	out, err := eng.Run(golden, len(golden))
	if err != nil {
		return err
	}
	return manifest.Write(dir, &manifest.Manifest{
		Name: "health", Version: 1, Task: "anomaly",
		Features: []manifest.Feature{{Field: "vibration", Agg: "max", Mean: 1, Std: 0.5}, {Field: "current", Agg: "mean", Mean: 10, Std: 2}},
		Outputs:  manifest.Outputs{Threshold: 0.5},
		Golden:   []manifest.Golden{{Input: golden, Output: out, Tolerance: 1e-5}},
	}, model)
}
