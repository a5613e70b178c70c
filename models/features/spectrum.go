package features

import (
	"fmt"
	"math"
	"math/cmplx"

	"gonum.org/v1/gonum/dsp/fourier"

	"github.com/outpost-edge/outpost/models/manifest"
)

// Spectral is one field's spectrum: the single-sided amplitude of bins
// 1..Points/2 (a sine of amplitude A on bin k reads A there) and each
// bin's frequency in Hz.
type Spectral struct {
	Amp, Freq []float64
}

// spectrum resamples one field onto points instants over [start, end),
// removes its mean (a sensor's offset would swamp band 0) and returns
// its single-sided amplitude spectrum, gonum's real FFT doing the work.
func (sc *Scratch) spectrum(ts []int64, vs []float64, start, end int64, points int) Spectral {
	x := sc.grow(points)
	Resample(ts, vs, start, end, points, false, x)
	var mean float64
	for _, v := range x {
		mean += v
	}
	mean /= float64(points)
	for i := range x {
		x[i] -= mean
	}
	if sc.ffts == nil {
		sc.ffts = map[int]*fourier.FFT{}
	}
	fft := sc.ffts[points]
	if fft == nil {
		fft = fourier.NewFFT(points)
		sc.ffts[points] = fft
	}
	n := points/2 + 1
	if cap(sc.coeff) < n {
		sc.coeff = make([]complex128, n)
	}
	coeff := fft.Coefficients(sc.coeff[:n], x)
	secs := float64(end-start) / 1e9
	sp := Spectral{Amp: make([]float64, points/2), Freq: make([]float64, points/2)}
	for k := 1; k <= points/2; k++ {
		a := 2 * cmplx.Abs(coeff[k]) / float64(points)
		if 2*k == points {
			a /= 2 // the Nyquist bin has no mirror image
		}
		sp.Amp[k-1], sp.Freq[k-1] = a, float64(k)/secs
	}
	return sp
}

// power is a bin's share of the signal's mean square: A²/2 for a sine,
// A² for the Nyquist bin's alternating sequence.
func power(amp float64, k, points int) float64 {
	if 2*k == points {
		return amp * amp
	}
	return amp * amp / 2
}

// SpectrumRow appends one spectrum input's row to dst: per field, in the
// spec's value order, its band amplitudes, band RMS, centroid and peak
// frequency, then normalised.
func (sc *Scratch) SpectrumRow(spec *manifest.SpectrumSpec, s *Samples, start, end int64, dst []float32) ([]float32, error) {
	base := len(dst)
	if end <= start {
		return dst, fmt.Errorf("%w: empty window", ErrInput)
	}
	for _, name := range spec.Fields {
		ts, vs, err := s.field(name, sc.ts, sc.vs)
		sc.ts, sc.vs = ts, vs
		if err != nil {
			return dst[:base], err
		}
		if need := max(spec.MinSamples, 2); len(vs) < need {
			return dst[:base], fmt.Errorf("%w: %s has %d samples, the input needs %d", ErrShort, name, len(vs), need)
		}
		sp := sc.spectrum(ts, vs, start, end, spec.Points)
		bins := len(sp.Amp)
		for _, v := range spec.ValueList() {
			switch v {
			case manifest.SpecBands, manifest.SpecBandRMS:
				for b := range spec.Bands {
					lo, hi := b*bins/spec.Bands, (b+1)*bins/spec.Bands
					var sum float64
					for k := lo; k < hi; k++ {
						if v == manifest.SpecBands {
							sum += sp.Amp[k]
						} else {
							sum += power(sp.Amp[k], k+1, spec.Points)
						}
					}
					x := sum / float64(max(hi-lo, 1))
					if v == manifest.SpecBandRMS {
						x = math.Sqrt(sum)
					} else if spec.Log {
						x = math.Log1p(x)
					}
					dst = append(dst, float32(x))
				}
			case manifest.SpecCentroid:
				var num, den float64
				for k, a := range sp.Amp {
					num, den = num+a*sp.Freq[k], den+a
				}
				c := 0.0
				if den > 0 {
					c = num / den
				}
				dst = append(dst, float32(c))
			case manifest.SpecPeak:
				k := 0
				for j, a := range sp.Amp {
					if a > sp.Amp[k] {
						k = j
					}
				}
				dst = append(dst, float32(sp.Freq[k]))
			}
		}
	}
	if len(spec.Normalize) > 0 {
		for i := range dst[base:] {
			dst[base+i] = float32(spec.Normalize[i].Apply(float64(dst[base+i])))
		}
	}
	return dst, nil
}
