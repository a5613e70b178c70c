package quant_test

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/outpost-edge/outpost/models/onnx"
	"github.com/outpost-edge/outpost/models/ort"
	"github.com/outpost-edge/outpost/quant"
)

// BenchmarkFamilies: the models (16-64-128-64-8 MLP in Gemm and
// MatMul+Add form, the 1-D and 2-D CNNs), float against our static and
// dynamic int8 on ONNX Runtime with one thread, at batch 1 and 32, the
// three run in turn in each iteration so a noisy machine slows all alike.
// Metrics: µs per batch of each, speedup (float time / int8 time), size
// ratio, and agreement with float's decisions on 512 held-out rows (the
// calibration rows are others).
//
//	go test -run '^$' -bench Families -benchtime 200x ./quant/
func BenchmarkFamilies(b *testing.B) {
	tr := trace(b)
	for _, f := range families(b)[1:] { // the skl2onnx MLP is the fusion test's
		rng := rand.New(rand.NewPCG(4, 2))
		calib, held := samples(rng, 256, f.features), samples(rng, 512, f.features)
		models := [][]byte{f.model}
		for _, mode := range []string{quant.Static, quant.Dynamic} {
			q, err := quant.Quantize(f.model, quant.Options{Mode: mode, Samples: calib, Tracer: feedTracer(f)(tr)})
			if err != nil {
				b.Fatal(err)
			}
			models = append(models, q)
		}
		info, err := onnx.Inspect(f.model)
		if err != nil {
			b.Fatal(err)
		}
		var sessions []*ort.Session
		for _, m := range models {
			s, err := ort.NewSessionWith(m, ort.Options{IntraOpThreads: 1})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			sessions = append(sessions, s)
		}
		runAll := func(x []float32) [][]float32 {
			var outs [][]float32
			for _, s := range sessions {
				y, err := s.RunFeeds([]onnx.Feed{feed(info, x, f.features)})
				if err != nil {
					b.Fatal(err)
				}
				outs = append(outs, y)
			}
			return outs
		}
		outs := runAll(flat(held))
		width := len(outs[0]) / len(held)
		agree := make([]float64, len(models))
		for i := range held {
			want := quant.Decide(outs[0][i*width:(i+1)*width], 0.5)
			for v := range models {
				if quant.Decide(outs[v][i*width:(i+1)*width], 0.5) == want {
					agree[v]++
				}
			}
		}
		for _, batch := range []int{1, 32} {
			x := flat(held[:batch])
			b.Run(f.name+"/batch"+map[int]string{1: "1", 32: "32"}[batch], func(b *testing.B) {
				total := make([]time.Duration, len(sessions))
				for i := 0; i < b.N; i++ {
					for k := range sessions {
						v := (i + k) % len(sessions) // rotate who goes first
						t0 := time.Now()
						if _, err := sessions[v].RunFeeds([]onnx.Feed{feed(info, x, f.features)}); err != nil {
							b.Fatal(err)
						}
						total[v] += time.Since(t0)
					}
				}
				for v, name := range []string{"float", "static", "dynamic"} {
					b.ReportMetric(float64(total[v].Microseconds())/float64(b.N), name+"-µs")
					if v > 0 {
						b.ReportMetric(float64(total[0])/float64(total[v]), name+"-speedup")
						b.ReportMetric(float64(len(models[v]))/float64(len(models[0])), name+"-size")
						b.ReportMetric(agree[v]/float64(len(held)), name+"-agree")
					}
				}
			})
		}
	}
}
