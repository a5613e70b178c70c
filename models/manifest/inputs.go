package manifest

import (
	"fmt"
	"math"
	"slices"
)

// Input kinds (manifest v2). A v1 manifest's `features` is one
// aggregates input.
const (
	Aggregates = "aggregates" // window aggregations, [N, F]
	Sequence   = "sequence"   // raw samples resampled onto T steps, [N, T, C] or [N, C, T]
	Spectrum   = "spectrum"   // FFT band features per field, [N, fields × values]
	Image      = "image"      // decoded, resized frames, [N, C, H, W] or [N, H, W, C]
)

// Input is one named graph input and how a window (or a frame) becomes
// its row. Exactly one of the kind's sections is set.
type Input struct {
	// Name is the graph input it feeds; empty only when the graph has one
	// input.
	Name     string        `json:"name,omitempty"`
	Kind     string        `json:"kind"`
	Features []Feature     `json:"features,omitempty"` // aggregates
	Sequence *SequenceSpec `json:"sequence,omitempty"`
	Spectrum *SpectrumSpec `json:"spectrum,omitempty"`
	Image    *ImageSpec    `json:"image,omitempty"`
}

// Norm is one channel's normalisation, (x - mean) / std; std 0 means 1.
type Norm struct {
	Mean float64 `json:"mean"`
	Std  float64 `json:"std"`
}

// Apply normalises x.
func (n Norm) Apply(x float64) float64 {
	if n.Std == 0 {
		return x - n.Mean
	}
	return (x - n.Mean) / n.Std
}

// SequenceSpec feeds the window's raw samples of Fields, resampled onto
// Steps evenly spaced instants from the window's start to its end.
type SequenceSpec struct {
	Fields []string `json:"fields"`
	Steps  int      `json:"steps"`
	// Interpolation is linear (default) or last (the latest sample at or
	// before each step).
	Interpolation string `json:"interpolation,omitempty"`
	// Layout is NTC (default: [N, steps, channels]) or NCT.
	Layout    string `json:"layout,omitempty"`
	Normalize []Norm `json:"normalize,omitempty"` // one per field, or none
	// MinSamples is how many samples a window needs (default: Steps);
	// Short says what a window with fewer does: skip (default; counted)
	// or pad (steps outside its samples hold Pad, after normalisation).
	MinSamples int     `json:"min_samples,omitempty" yaml:"min_samples,omitempty"`
	Short      string  `json:"short,omitempty"`
	Pad        float64 `json:"pad,omitempty"`
}

// Spectrum values, per field, in this order when listed.
const (
	SpecBands    = "bands"    // mean FFT magnitude per band (log1p if Log)
	SpecBandRMS  = "band_rms" // the signal's RMS within each band (Parseval)
	SpecCentroid = "centroid" // magnitude-weighted mean frequency, Hz
	SpecPeak     = "peak"     // frequency of the largest magnitude, Hz
)

// SpectrumSpec feeds DSP features of each field: the window's samples
// are resampled onto Points instants (the window's length sets the
// rate), their DC removed, and transformed; bins 1..Points/2 are split
// into Bands equal bands.
type SpectrumSpec struct {
	Fields []string `json:"fields"`
	Points int      `json:"points"`
	Bands  int      `json:"bands"`
	Log    bool     `json:"log,omitempty"`
	// Values lists what each field contributes (default: all four, in
	// the order bands, band_rms, centroid, peak).
	Values     []string `json:"values,omitempty"`
	Normalize  []Norm   `json:"normalize,omitempty"` // one per value of the row, or none
	MinSamples int      `json:"min_samples,omitempty" yaml:"min_samples,omitempty"`
}

// ImageSpec feeds frames decoded from JPEG or PNG and resized to
// Width × Height.
type ImageSpec struct {
	Width    int    `json:"width"`
	Height   int    `json:"height"`
	Channels string `json:"channels"`         // RGB, BGR or GRAY
	Layout   string `json:"layout,omitempty"` // NCHW (default) or NHWC
	Type     string `json:"type,omitempty"`   // float32 (default) or uint8
	// Scale multiplies each 0..255 value before Normalize (float32 only;
	// default 1/255).
	Scale     float64 `json:"scale,omitempty"`
	Normalize []Norm  `json:"normalize,omitempty"` // one per channel, or none (float32 only)
}

// InputList is the manifest's inputs: v2's list, or v1's features as one
// aggregates input.
func (m *Manifest) InputList() []Input {
	if len(m.Inputs) > 0 {
		return m.Inputs
	}
	return []Input{{Kind: Aggregates, Features: m.Features}}
}

// Aggregated reports whether every input is aggregates: the trainer and
// drift monitors need that to read a row from a window record.
func (m *Manifest) Aggregated() bool {
	for _, in := range m.InputList() {
		if in.Kind != Aggregates {
			return false
		}
	}
	return true
}

// RowWidth is the values one row takes across all inputs: a golden
// vector's input is the inputs' rows concatenated in order.
func (m *Manifest) RowWidth() int {
	n := 0
	for _, in := range m.InputList() {
		n += in.Width()
	}
	return n
}

// Width is the values of one row of this input.
func (in Input) Width() int {
	n := 1
	for _, d := range in.Dims() {
		n *= d
	}
	return n
}

// Dims is one row's shape (without the batch).
func (in Input) Dims() []int {
	switch in.Kind {
	case Aggregates:
		return []int{len(in.Features)}
	case Sequence:
		s := in.Sequence
		if s.Layout == "NCT" {
			return []int{len(s.Fields), s.Steps}
		}
		return []int{s.Steps, len(s.Fields)}
	case Spectrum:
		return []int{len(in.Spectrum.Fields) * in.Spectrum.PerField()}
	case Image:
		im := in.Image
		c := im.ChannelCount()
		if im.Layout == "NHWC" {
			return []int{im.Height, im.Width, c}
		}
		return []int{c, im.Height, im.Width}
	}
	return []int{0}
}

// ElemType is the graph input's element type: FLOAT, or UINT8 for uint8
// images.
func (in Input) ElemType() string {
	if in.Kind == Image && in.Image.Type == "uint8" {
		return "UINT8"
	}
	return "FLOAT"
}

// ChannelCount is 1 for GRAY, else 3.
func (im *ImageSpec) ChannelCount() int {
	if im.Channels == "GRAY" {
		return 1
	}
	return 3
}

// ValueList is Values, or all four in their order.
func (s *SpectrumSpec) ValueList() []string {
	if len(s.Values) == 0 {
		return []string{SpecBands, SpecBandRMS, SpecCentroid, SpecPeak}
	}
	return s.Values
}

// PerField is the values one field contributes.
func (s *SpectrumSpec) PerField() int {
	n := 0
	for _, v := range s.ValueList() {
		if v == SpecBands || v == SpecBandRMS {
			n += s.Bands
		} else {
			n++
		}
	}
	return n
}

// MinOrSteps is the samples a sequence window needs.
func (s *SequenceSpec) MinOrSteps() int {
	if s.MinSamples > 0 {
		return s.MinSamples
	}
	return s.Steps
}

// RawFields are the fields whose raw samples the inputs need, in first
// use order: the agent buffers only these.
func (m *Manifest) RawFields() []string {
	var out []string
	for _, in := range m.InputList() {
		var fs []string
		switch in.Kind {
		case Sequence:
			fs = in.Sequence.Fields
		case Spectrum:
			fs = in.Spectrum.Fields
		}
		for _, f := range fs {
			if !slices.Contains(out, f) {
				out = append(out, f)
			}
		}
	}
	return out
}

// The bounds keep a hostile manifest from sizing the agent's buffers.
const (
	maxSteps  = 1 << 16
	maxPoints = 1 << 16
	maxPixels = 4096 * 4096
)

// validate checks one input; i is its index for the error's path.
func (in Input) validate(i int) error {
	at := fmt.Sprintf("inputs[%d]", i)
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s: %s", ErrInvalid, at, fmt.Sprintf(format, a...))
	}
	set := 0
	for _, ok := range []bool{len(in.Features) > 0, in.Sequence != nil, in.Spectrum != nil, in.Image != nil} {
		if ok {
			set++
		}
	}
	if set != 1 {
		return bad("exactly one of features, sequence, spectrum and image must be set, for kind %q", in.Kind)
	}
	norms := func(path string, ns []Norm, want int) error {
		if len(ns) != 0 && len(ns) != want {
			return bad("%s: %d entries, want %d or none", path, len(ns), want)
		}
		for j, n := range ns {
			if n.Std < 0 || math.IsNaN(n.Mean) || math.IsNaN(n.Std) || math.IsInf(n.Mean, 0) || math.IsInf(n.Std, 0) {
				return bad("%s[%d]: mean and std must be finite, std ≥ 0", path, j)
			}
		}
		return nil
	}
	fields := func(path string, fs []string) error {
		if len(fs) == 0 {
			return bad("%s: at least one field", path)
		}
		for j, f := range fs {
			if f == "" || slices.Index(fs, f) != j {
				return bad("%s[%d]: empty or repeated field %q", path, j, f)
			}
		}
		return nil
	}
	switch in.Kind {
	case Aggregates:
		if len(in.Features) == 0 {
			return bad("kind aggregates needs features")
		}
		for j, f := range in.Features {
			if f.Field == "" || f.Agg == "" || f.Std < 0 || math.IsNaN(f.Mean) || math.IsNaN(f.Std) {
				return bad("features[%d] needs field, agg and std ≥ 0", j)
			}
		}
	case Sequence:
		s := in.Sequence
		if s == nil {
			return bad("kind sequence needs a sequence section")
		}
		if err := fields("sequence.fields", s.Fields); err != nil {
			return err
		}
		switch {
		case s.Steps < 2 || s.Steps > maxSteps:
			return bad("sequence.steps %d (2 to %d)", s.Steps, maxSteps)
		case s.Interpolation != "" && s.Interpolation != "linear" && s.Interpolation != "last":
			return bad("sequence.interpolation %q (linear or last)", s.Interpolation)
		case s.Layout != "" && s.Layout != "NTC" && s.Layout != "NCT":
			return bad("sequence.layout %q (NTC or NCT)", s.Layout)
		case s.Short != "" && s.Short != "skip" && s.Short != "pad":
			return bad("sequence.short %q (skip or pad)", s.Short)
		case s.MinSamples < 0 || s.MinSamples > maxSteps:
			return bad("sequence.min_samples %d (0 to %d)", s.MinSamples, maxSteps)
		case math.IsNaN(s.Pad) || math.IsInf(s.Pad, 0):
			return bad("sequence.pad must be finite")
		}
		return norms("sequence.normalize", s.Normalize, len(s.Fields))
	case Spectrum:
		s := in.Spectrum
		if s == nil {
			return bad("kind spectrum needs a spectrum section")
		}
		if err := fields("spectrum.fields", s.Fields); err != nil {
			return err
		}
		if s.Points < 4 || s.Points > maxPoints {
			return bad("spectrum.points %d (4 to %d)", s.Points, maxPoints)
		}
		if s.Bands < 1 || s.Bands > s.Points/2 {
			return bad("spectrum.bands %d (1 to points/2 = %d)", s.Bands, s.Points/2)
		}
		if s.MinSamples < 0 || s.MinSamples > maxPoints {
			return bad("spectrum.min_samples %d (0 to %d)", s.MinSamples, maxPoints)
		}
		for j, v := range s.Values {
			if !slices.Contains([]string{SpecBands, SpecBandRMS, SpecCentroid, SpecPeak}, v) || slices.Index(s.Values, v) != j {
				return bad("spectrum.values[%d] %q (bands, band_rms, centroid or peak, once each)", j, v)
			}
		}
		return norms("spectrum.normalize", s.Normalize, len(s.Fields)*s.PerField())
	case Image:
		im := in.Image
		if im == nil {
			return bad("kind image needs an image section")
		}
		switch {
		case im.Width < 1 || im.Height < 1 || im.Width*im.Height > maxPixels:
			return bad("image: width %d × height %d (1 to %d pixels)", im.Width, im.Height, maxPixels)
		case im.Channels != "RGB" && im.Channels != "BGR" && im.Channels != "GRAY":
			return bad("image.channels %q (RGB, BGR or GRAY)", im.Channels)
		case im.Layout != "" && im.Layout != "NCHW" && im.Layout != "NHWC":
			return bad("image.layout %q (NCHW or NHWC)", im.Layout)
		case im.Type != "" && im.Type != "float32" && im.Type != "uint8":
			return bad("image.type %q (float32 or uint8)", im.Type)
		case im.Type == "uint8" && (im.Scale != 0 || len(im.Normalize) > 0):
			return bad("image: a uint8 input takes the pixels as they are: no scale or normalize")
		case im.Scale < 0 || math.IsNaN(im.Scale) || math.IsInf(im.Scale, 0):
			return bad("image.scale must be finite and ≥ 0")
		}
		return norms("image.normalize", im.Normalize, im.ChannelCount())
	default:
		return bad("kind %q (aggregates, sequence, spectrum or image)", in.Kind)
	}
	return nil
}

// validateInputs checks v2's inputs: names unique, at most one image
// input, and no image beside window inputs (frames are not windows).
func (m *Manifest) validateInputs() error {
	if len(m.Inputs) > 0 && len(m.Features) > 0 {
		return fmt.Errorf("%w: features (v1) and inputs (v2) are both set; move the features into an aggregates input", ErrInvalid)
	}
	if len(m.Inputs) == 0 {
		return nil
	}
	images := 0
	for i, in := range m.Inputs {
		if err := in.validate(i); err != nil {
			return err
		}
		if in.Name == "" && len(m.Inputs) > 1 {
			return fmt.Errorf("%w: inputs[%d]: name the graph input it feeds (the manifest has %d inputs)", ErrInvalid, i, len(m.Inputs))
		}
		for j := range i {
			if m.Inputs[j].Name == in.Name {
				return fmt.Errorf("%w: inputs[%d]: graph input %q is fed twice", ErrInvalid, i, in.Name)
			}
		}
		if in.Kind == Image {
			images++
		}
	}
	if images > 0 && len(m.Inputs) > 1 {
		return fmt.Errorf("%w: an image input must be the model's only input (frames are not windows)", ErrInvalid)
	}
	return nil
}
