package features

import (
	"bytes"
	"fmt"
	"image"
	_ "image/jpeg" // frames arrive as JPEG or PNG
	_ "image/png"
	"math"

	"golang.org/x/image/draw"

	"github.com/outpost-edge/outpost/models/manifest"
)

// MaxFramePixels bounds a frame before it is decoded: a 100-byte PNG can
// declare a gigapixel canvas.
const MaxFramePixels = 50_000_000

// DecodeFrame decodes a JPEG or PNG frame, refusing one whose declared
// size is over MaxFramePixels before any pixel is allocated. It returns
// the image and its format.
func DecodeFrame(data []byte) (image.Image, string, error) {
	cfg, format, err := image.DecodeConfig(bytes.NewReader(data))
	if err != nil {
		return nil, "", fmt.Errorf("%w: not a JPEG or PNG frame: %w", ErrInput, err)
	}
	if cfg.Width < 1 || cfg.Height < 1 || int64(cfg.Width)*int64(cfg.Height) > MaxFramePixels {
		return nil, "", fmt.Errorf("%w: %s frame of %d × %d pixels (at most %d)", ErrInput, format, cfg.Width, cfg.Height, MaxFramePixels)
	}
	img, _, err := image.Decode(bytes.NewReader(data))
	if err != nil {
		return nil, "", fmt.Errorf("%w: %s frame: %w", ErrInput, format, err)
	}
	return img, format, nil
}

// ImageRow appends one image input's row to dst: the frame resized to
// the spec's size (bilinear, golang.org/x/image/draw), its channels in
// the spec's order and layout, scaled and normalised (float32) or as
// 0..255 values (uint8; the engine converts them to bytes).
func (sc *Scratch) ImageRow(spec *manifest.ImageSpec, img image.Image, dst []float32) []float32 {
	w, h := spec.Width, spec.Height
	if sc.rgba == nil || sc.rgba.Rect.Dx() != w || sc.rgba.Rect.Dy() != h {
		sc.rgba = image.NewRGBA(image.Rect(0, 0, w, h))
	}
	draw.BiLinear.Scale(sc.rgba, sc.rgba.Rect, img, img.Bounds(), draw.Src, nil)
	c := spec.ChannelCount()
	base := len(dst)
	n := w * h * c
	for range n {
		dst = append(dst, 0)
	}
	row := dst[base:]
	scale := spec.Scale
	if scale == 0 {
		scale = 1.0 / 255
	}
	uint8s := spec.Type == "uint8"
	pix := sc.rgba.Pix
	for y := range h {
		for x := range w {
			p := pix[y*sc.rgba.Stride+4*x:]
			var vals [3]float64
			switch spec.Channels {
			case "GRAY": // ITU-R BT.601 luma, as image/color's Gray model
				vals[0] = (299*float64(p[0]) + 587*float64(p[1]) + 114*float64(p[2])) / 1000
			case "BGR":
				vals = [3]float64{float64(p[2]), float64(p[1]), float64(p[0])}
			default:
				vals = [3]float64{float64(p[0]), float64(p[1]), float64(p[2])}
			}
			for ch := range c {
				v := vals[ch]
				if uint8s {
					v = math.Round(v)
				} else {
					v *= scale
					if len(spec.Normalize) > 0 {
						v = spec.Normalize[ch].Apply(v)
					}
				}
				if spec.Layout == "NHWC" {
					row[(y*w+x)*c+ch] = float32(v)
				} else {
					row[(ch*h+y)*w+x] = float32(v)
				}
			}
		}
	}
	return dst
}
