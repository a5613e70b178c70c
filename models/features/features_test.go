package features

import (
	"bytes"
	"errors"
	"image"
	"image/color"
	"image/png"
	"math"
	"testing"

	"github.com/outpost-edge/outpost/models/manifest"
)

const sec = int64(1e9)

func TestResample(t *testing.T) {
	ts := []int64{0, 1 * sec, 3 * sec}
	vs := []float64{0, 10, 30}
	for _, c := range []struct {
		name       string
		start, end int64
		steps      int
		last       bool
		want       []float64
		lo, hi     int
	}{
		{"identity", 0, 4 * sec, 4, false, []float64{0, 10, 20, 30}, 0, 3},
		{"last value", 0, 4 * sec, 4, true, []float64{0, 10, 10, 30}, 0, 3},
		{"half steps", 0, 2 * sec, 4, false, []float64{0, 5, 10, 15}, 0, 3},
		{"edges held", -2 * sec, 6 * sec, 4, false, []float64{0, 0, 20, 30}, 1, 2},
		{"last before any", -2 * sec, 6 * sec, 4, true, []float64{0, 0, 10, 30}, 1, 2},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := make([]float64, c.steps)
			lo, hi := Resample(ts, vs, c.start, c.end, c.steps, c.last, got)
			for i := range got {
				if math.Abs(got[i]-c.want[i]) > 1e-9 {
					t.Fatalf("got %v, want %v", got, c.want)
				}
			}
			if lo != c.lo || hi != c.hi {
				t.Fatalf("span [%d, %d], want [%d, %d]", lo, hi, c.lo, c.hi)
			}
		})
	}
}

// samples100Hz is n readings at 100 Hz of each field's function.
func samples100Hz(n int, fns map[string]func(t float64) float64) *Samples {
	s := &Samples{}
	for name := range fns {
		s.Fields = append(s.Fields, name)
	}
	s.V = make([][]float64, len(s.Fields))
	for k := range n {
		t := float64(k) / 100
		s.T = append(s.T, int64(k)*sec/100)
		for i, name := range s.Fields {
			s.V[i] = append(s.V[i], fns[name](t))
		}
	}
	return s
}

func TestSequenceRow(t *testing.T) {
	s := samples100Hz(200, map[string]func(float64) float64{
		"x": func(t float64) float64 { return t },
		"y": func(t float64) float64 { return 2 },
	})
	spec := &manifest.SequenceSpec{Fields: []string{"x", "y"}, Steps: 4, Normalize: []manifest.Norm{{Mean: 1, Std: 0.5}, {Mean: 0, Std: 2}}}
	var sc Scratch
	row, err := sc.SequenceRow(spec, s, 0, 2*sec, nil)
	if err != nil {
		t.Fatal(err)
	}
	// x at 0, 0.5, 1, 1.5 s → (x-1)/0.5; y → 1; NTC interleaves.
	want := []float32{-2, 1, -1, 1, 0, 1, 1, 1}
	if !close32(row, want) {
		t.Fatalf("NTC row %v, want %v", row, want)
	}
	spec.Layout = "NCT"
	row, _ = sc.SequenceRow(spec, s, 0, 2*sec, row[:0])
	if want := []float32{-2, -1, 0, 1, 1, 1, 1, 1}; !close32(row, want) {
		t.Fatalf("NCT row %v, want %v", row, want)
	}
	// 200 steps over 2 s at 100 Hz are the samples themselves.
	spec = &manifest.SequenceSpec{Fields: []string{"x"}, Steps: 200}
	row, _ = sc.SequenceRow(spec, s, 0, 2*sec, nil)
	for i, v := range row {
		if math.Abs(float64(v)-float64(i)/100) > 1e-6 {
			t.Fatalf("step %d = %v, want %v", i, v, float64(i)/100)
		}
	}
}

func TestSequenceShortWindows(t *testing.T) {
	s := &Samples{Fields: []string{"x"}, T: []int64{sec, 2 * sec}, V: [][]float64{{4, math.NaN()}}}
	spec := &manifest.SequenceSpec{Fields: []string{"x"}, Steps: 4, MinSamples: 2}
	var sc Scratch
	if _, err := sc.SequenceRow(spec, s, 0, 4*sec, nil); !errors.Is(err, ErrShort) {
		t.Fatalf("a window with one real sample of two needed: %v, want ErrShort", err)
	}
	spec.Short, spec.Pad = "pad", -9
	row, err := sc.SequenceRow(spec, s, 0, 4*sec, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := []float32{-9, 4, -9, -9}; !close32(row, want) {
		t.Fatalf("padded row %v, want %v", row, want)
	}
	if _, err := sc.SequenceRow(&manifest.SequenceSpec{Fields: []string{"z"}, Steps: 2}, s, 0, sec, nil); !errors.Is(err, ErrInput) {
		t.Fatalf("a field without raw samples: %v, want ErrInput", err)
	}
}

func TestSpectrumOfAPureSine(t *testing.T) {
	// 3 sin(2π·10t) + 5 (an offset) at 100 Hz for 2 s: a 2 s window puts
	// 10 Hz on bin 20 exactly, whatever the points. 400 points
	// interpolate between the samples, which leaks a little energy into
	// images near 90 and 110 Hz.
	s := samples100Hz(200, map[string]func(float64) float64{
		"x": func(t float64) float64 { return 3*math.Sin(2*math.Pi*10*t) + 5 },
	})
	for _, c := range []struct {
		points, bands int
		band          int // the band holding 10 Hz
		leak          float64
	}{{200, 4, 0, 0.01}, {200, 10, 1, 0.01}, {400, 5, 0, 0.1}} {
		spec := &manifest.SpectrumSpec{Fields: []string{"x"}, Points: c.points, Bands: c.bands}
		var sc Scratch
		row, err := sc.SpectrumRow(spec, s, 0, 2*sec, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(row) != spec.PerField() {
			t.Fatalf("%d values, want %d", len(row), spec.PerField())
		}
		bands, rms := row[:c.bands], row[c.bands:2*c.bands]
		centroid, peak := row[2*c.bands], row[2*c.bands+1]
		if math.Abs(float64(peak)-10) > 1e-3 {
			t.Errorf("points %d: peak %v Hz, want 10", c.points, peak)
		}
		if math.Abs(float64(rms[c.band])-3/math.Sqrt2) > c.leak {
			t.Errorf("points %d: band %d RMS %v, want 3/√2 = %.4f", c.points, c.band, rms[c.band], 3/math.Sqrt2)
		}
		for b := range c.bands {
			if b != c.band && (float64(rms[b]) > c.leak || float64(bands[b]) > c.leak) {
				t.Errorf("points %d: band %d holds %v (RMS %v), want about 0", c.points, b, bands[b], rms[b])
			}
		}
		if c.points == 200 && math.Abs(float64(centroid)-10) > 1e-3 {
			t.Errorf("points %d: centroid %v Hz, want about 10", c.points, centroid)
		}
	}
}

func TestSpectrumValuesAndNormalize(t *testing.T) {
	s := samples100Hz(100, map[string]func(float64) float64{
		"a": func(t float64) float64 { return math.Sin(2 * math.Pi * 5 * t) },
		"b": func(t float64) float64 { return 2 * math.Sin(2*math.Pi*20*t) },
	})
	spec := &manifest.SpectrumSpec{Fields: []string{"a", "b"}, Points: 100, Bands: 5, Values: []string{"peak", "band_rms"},
		Normalize: make([]manifest.Norm, 12)}
	spec.Normalize[0] = manifest.Norm{Mean: 5, Std: 1}
	var sc Scratch
	row, err := sc.SpectrumRow(spec, s, 0, sec, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(row) != 12 {
		t.Fatalf("%d values, want 2 fields × (1 + 5)", len(row))
	}
	if math.Abs(float64(row[0])) > 1e-3 || math.Abs(float64(row[6])-20) > 1e-3 {
		t.Fatalf("normalised peak of a %v (want 0), peak of b %v (want 20)", row[0], row[6])
	}
	// 20 Hz of 50 Hz in 5 bands of 10 Hz: band 1 of b ([11, 20] Hz).
	if math.Abs(float64(row[7+1])-2/math.Sqrt2) > 0.05 {
		t.Fatalf("b's band RMS %v, want √2 in band 1", row[7:])
	}
	if _, err := sc.SpectrumRow(spec, &Samples{Fields: []string{"a", "b"}, T: []int64{0}, V: [][]float64{{1}, {1}}}, 0, sec, nil); !errors.Is(err, ErrShort) {
		t.Fatalf("one sample: %v, want ErrShort", err)
	}
}

func pngOf(t testing.TB, img image.Image) []byte {
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestImageRow(t *testing.T) {
	// A 4×2 frame: left half red, right half blue.
	src := image.NewRGBA(image.Rect(0, 0, 4, 2))
	for y := range 2 {
		for x := range 4 {
			c := color.RGBA{255, 0, 0, 255}
			if x >= 2 {
				c = color.RGBA{0, 0, 255, 255}
			}
			src.Set(x, y, c)
		}
	}
	img, format, err := DecodeFrame(pngOf(t, src))
	if err != nil || format != "png" {
		t.Fatalf("decode: %v %q", err, format)
	}
	for _, c := range []struct {
		name string
		spec manifest.ImageSpec
		want []float32
	}{
		{"RGB NCHW float", manifest.ImageSpec{Width: 4, Height: 2, Channels: "RGB"}, planes(
			[]float32{1, 1, 0, 0}, []float32{0, 0, 0, 0}, []float32{0, 0, 1, 1})},
		{"BGR NHWC", manifest.ImageSpec{Width: 4, Height: 2, Channels: "BGR", Layout: "NHWC"}, rows(
			[]float32{0, 0, 1, 0, 0, 1, 1, 0, 0, 1, 0, 0})},
		{"uint8", manifest.ImageSpec{Width: 4, Height: 2, Channels: "RGB", Type: "uint8"}, planes(
			[]float32{255, 255, 0, 0}, []float32{0, 0, 0, 0}, []float32{0, 0, 255, 255})},
		{"gray", manifest.ImageSpec{Width: 4, Height: 2, Channels: "GRAY", Type: "uint8"}, planes([]float32{76, 76, 29, 29})},
		{"normalised", manifest.ImageSpec{Width: 4, Height: 2, Channels: "RGB", Scale: 1,
			Normalize: []manifest.Norm{{Mean: 127.5, Std: 127.5}, {Mean: 0, Std: 255}, {Mean: 255, Std: 1}}},
			planes([]float32{1, 1, -1, -1}, []float32{0, 0, 0, 0}, []float32{-255, -255, 0, 0})},
	} {
		t.Run(c.name, func(t *testing.T) {
			var sc Scratch
			got := sc.ImageRow(&c.spec, img, nil)
			if !close32(got, c.want) {
				t.Fatalf("got %v, want %v", got, c.want)
			}
		})
	}
	// Resizing: the halves stay apart (red left, blue right), and a flat
	// frame stays flat up and down.
	var sc Scratch
	half := sc.ImageRow(&manifest.ImageSpec{Width: 2, Height: 1, Channels: "RGB", Type: "uint8"}, img, nil)
	if !(half[0] > 200 && half[1] < 55 && half[4] < 55 && half[5] > 200) {
		t.Fatalf("4×2 → 2×1: R %v, B %v; want red left and blue right", half[:2], half[4:])
	}
	flat := image.NewGray(image.Rect(0, 0, 3, 5))
	for i := range flat.Pix {
		flat.Pix[i] = 90
	}
	for _, size := range []int{1, 2, 9} {
		got := sc.ImageRow(&manifest.ImageSpec{Width: size, Height: size, Channels: "GRAY", Type: "uint8"}, flat, nil)
		for _, v := range got {
			if v != 90 {
				t.Fatalf("a flat frame resized to %d²: %v, want all 90", size, got)
			}
		}
	}
}

// planes is an NCHW 4×2 frame whose two rows are alike, per channel.
func planes(chans ...[]float32) []float32 {
	var out []float32
	for _, c := range chans {
		out = append(append(out, c...), c...)
	}
	return out
}

// rows is an NHWC frame of two like rows.
func rows(r []float32) []float32 { return append(append([]float32(nil), r...), r...) }

func TestDecodeFrameRefusals(t *testing.T) {
	for name, data := range map[string][]byte{
		"empty":     nil,
		"text":      []byte("hello"),
		"truncated": pngOf(t, image.NewGray(image.Rect(0, 0, 50, 50)))[:60],
		"bomb":      bombPNG(t),
	} {
		if _, _, err := DecodeFrame(data); !errors.Is(err, ErrInput) {
			t.Errorf("%s: %v, want ErrInput", name, err)
		}
	}
}

// bombPNG declares 100,000 × 100,000 pixels in a few hundred bytes.
func bombPNG(t testing.TB) []byte {
	b := pngOf(t, image.NewGray(image.Rect(0, 0, 1, 1)))
	// IHDR's width and height sit at bytes 16..23; the CRC is not checked
	// before DecodeConfig reads them.
	out := append([]byte(nil), b...)
	for _, off := range []int{16, 20} {
		out[off], out[off+1], out[off+2], out[off+3] = 0, 0x01, 0x86, 0xa0
	}
	return out
}

func close32(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if math.Abs(float64(a[i]-b[i])) > 1e-4 {
			return false
		}
	}
	return true
}

// FuzzImagePath feeds arbitrary bytes through decode and every layout:
// no input may panic, hang or allocate past the pixel bound.
func FuzzImagePath(f *testing.F) {
	f.Add(pngOf(f, image.NewRGBA(image.Rect(0, 0, 3, 2))), uint8(0))
	f.Add(bombPNG(f), uint8(1))
	f.Add([]byte("\xff\xd8\xff\xe0"), uint8(2))
	f.Fuzz(func(t *testing.T, data []byte, mode uint8) {
		img, _, err := DecodeFrame(data)
		if err != nil {
			if !errors.Is(err, ErrInput) {
				t.Fatalf("error %v is not ErrInput", err)
			}
			return
		}
		spec := manifest.ImageSpec{Width: 1 + int(mode%7), Height: 1 + int(mode/7%5), Channels: []string{"RGB", "BGR", "GRAY"}[mode%3]}
		if mode&1 == 1 {
			spec.Layout = "NHWC"
		}
		var sc Scratch
		row := sc.ImageRow(&spec, img, nil)
		if len(row) != spec.Width*spec.Height*spec.ChannelCount() {
			t.Fatalf("%d values for %+v", len(row), spec)
		}
		for _, v := range row {
			if math.IsNaN(float64(v)) || v < 0 || v > 1 {
				t.Fatalf("value %v outside [0, 1]", v)
			}
		}
	})
}
