// Package features turns a window's raw samples, or a camera frame, into
// a model input row as the manifest's v2 inputs declare it: resampled
// sequences, spectral features and images. It is the one implementation
// the agent (at inference) and the hub (training, import, golden
// vectors) share, so both compute the same row.
package features

import (
	"errors"
	"fmt"
	"image"
	"math"
	"slices"

	"gonum.org/v1/gonum/dsp/fourier"

	"github.com/outpost-edge/outpost/models/manifest"
)

// ErrShort means a window holds fewer samples than its input needs; the
// agent skips it and counts the reason.
var ErrShort = errors.New("too few samples in the window")

// ErrInput means samples or a frame cannot make a row (missing field,
// undecodable or oversized image).
var ErrInput = errors.New("features: bad input")

// Samples are one window's raw readings: T in Unix nanoseconds, sorted
// ascending, and V[i][k] field Fields[i] at T[k]. A NaN value is a
// reading without that field.
type Samples struct {
	Fields []string
	T      []int64
	V      [][]float64
}

// field returns the samples of one field, NaNs left out, into the
// scratch slices.
func (s *Samples) field(name string, ts []int64, vs []float64) ([]int64, []float64, error) {
	i := slices.Index(s.Fields, name)
	if i < 0 {
		return nil, nil, fmt.Errorf("%w: no raw samples of field %q are kept", ErrInput, name)
	}
	ts, vs = ts[:0], vs[:0]
	for k, v := range s.V[i] {
		if !math.IsNaN(v) && !math.IsInf(v, 0) {
			ts, vs = append(ts, s.T[k]), append(vs, v)
		}
	}
	return ts, vs, nil
}

// Resample evaluates samples (t ascending) at steps instants evenly
// spaced over [start, end): start + i·(end-start)/steps, so a 100 Hz
// stream in a 2 s window on 200 steps is its own samples. It writes into dst. Linear interpolates
// between neighbours and holds the edge values outside them; last takes
// the latest sample at or before each instant (the first before any).
// It returns the first and last step that lie within the samples' span.
func Resample(t []int64, v []float64, start, end int64, steps int, last bool, dst []float64) (lo, hi int) {
	lo, hi = steps, -1
	if len(t) == 0 {
		for i := range dst[:steps] {
			dst[i] = 0
		}
		return lo, hi
	}
	k := 0
	for i := range steps {
		span, n := end-start, int64(steps)
		at := start + span/n*int64(i) + span%n*int64(i)/n // exact: no float rounding before a sample
		for k+1 < len(t) && t[k+1] <= at {
			k++
		}
		if at >= t[0] && at <= t[len(t)-1] {
			lo, hi = min(lo, i), max(hi, i)
		}
		switch {
		case at <= t[0]:
			dst[i] = v[0]
		case k+1 >= len(t) || last:
			dst[i] = v[k]
		default:
			t0, t1 := t[k], t[k+1]
			f := float64(at-t0) / float64(t1-t0)
			dst[i] = v[k] + f*(v[k+1]-v[k])
		}
	}
	return lo, hi
}

// Scratch holds the buffers rows are built in, so a pipeline builds
// them without allocating; the zero value is ready. It is not safe for
// concurrent use.
type Scratch struct {
	ts      []int64
	vs, buf []float64
	coeff   []complex128
	ffts    map[int]*fourier.FFT
	rgba    *image.RGBA
}

func (sc *Scratch) grow(n int) []float64 {
	if cap(sc.buf) < n {
		sc.buf = make([]float64, n)
	}
	return sc.buf[:n]
}

// SequenceRow appends one sequence input's row to dst: each field
// resampled onto the spec's steps over [start, end) and normalised, laid
// out NTC or NCT.
func (sc *Scratch) SequenceRow(spec *manifest.SequenceSpec, s *Samples, start, end int64, dst []float32) ([]float32, error) {
	steps, c := spec.Steps, len(spec.Fields)
	base := len(dst)
	dst = slices.Grow(dst, steps*c)[:base+steps*c]
	row := dst[base:]
	buf := sc.grow(steps)
	for ch, name := range spec.Fields {
		ts, vs, err := s.field(name, sc.ts, sc.vs)
		sc.ts, sc.vs = ts, vs
		if err != nil {
			return dst[:base], err
		}
		short := len(vs) < spec.MinOrSteps()
		if short && spec.Short != "pad" {
			return dst[:base], fmt.Errorf("%w: %s has %d samples, the input needs %d", ErrShort, name, len(vs), spec.MinOrSteps())
		}
		lo, hi := Resample(ts, vs, start, end, steps, spec.Interpolation == "last", buf)
		var norm manifest.Norm
		if len(spec.Normalize) > 0 {
			norm = spec.Normalize[ch]
		}
		for i, x := range buf {
			y := norm.Apply(x)
			if short && (i < lo || i > hi) {
				y = spec.Pad
			}
			if spec.Layout == "NCT" {
				row[ch*steps+i] = float32(y)
			} else {
				row[i*c+ch] = float32(y)
			}
		}
	}
	return dst, nil
}
