//go:build cgo

// Package ort runs ONNX models on ONNX Runtime through onnxruntime_go. The
// runtime is a process-wide shared library loaded once.
package ort

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	ortgo "github.com/yalue/onnxruntime_go"

	"github.com/outpost-edge/outpost/models/onnx"
	"github.com/outpost-edge/outpost/models/onnx/onnxpb"
)

// haveRuntime: this build links ONNX Runtime (see nocgo.go).
const haveRuntime = true

// errNoRuntime is nocgo.go's; this build never returns it.
var errNoRuntime error

var (
	envMu   sync.Mutex
	envPath string // library the environment was initialised with
)

// Init loads libonnxruntime from path and initialises the environment. It
// is safe to call again with the same path; another path is an error,
// because a process can hold only one runtime.
func Init(path string) error {
	envMu.Lock()
	defer envMu.Unlock()
	if envPath != "" {
		if envPath != path {
			return fmt.Errorf("%w: already loaded from %s, asked for %s", ErrRuntime, envPath, path)
		}
		return nil
	}
	ortgo.SetSharedLibraryPath(path)
	if err := ortgo.InitializeEnvironment(ortgo.WithLogLevelError()); err != nil {
		return fmt.Errorf("%w: load %s: %w", ErrRuntime, path, err)
	}
	envPath = path
	releaseCode(path)
	return nil
}

// Version is the loaded runtime's version string.
func Version() string { return ortgo.GetVersion() }

// Session is one loaded model with one or more inputs; it serves one
// float32 output, the scores, of however many the graph has.
type Session struct {
	s          *ortgo.DynamicAdvancedSession
	inputs     []input
	names      []string // the inputs' names, for onnx.Match
	out        string
	outPerItem int64
	// fast: the graph has one float32 input, which Run binds to tensors
	// reused per batch size: creating them through cgo on every call
	// doubled the cost of a small model's run.
	fast    bool
	mu      sync.Mutex
	tensors map[int64]*tensorPair
	// shared is RunFeedsShared's output, alive until the next call.
	shared ortgo.Value
	order  []int
	// Provider is the execution provider in use; FallbackReason says why
	// it is not the one asked for, if it is not.
	Provider, FallbackReason string
}

// Outputs is the output width per batch row.
func (s *Session) Outputs() int { return int(s.outPerItem) }

// NewSession loads an ONNX model from memory with default options.
func NewSession(model []byte) (*Session, error) { return NewSessionWith(model, Options{}) }

// NewSessionWith loads an ONNX model from memory. Its inputs are tensors
// of the types feeds can carry (float, double, uint8, int8, int32, int64);
// of its outputs, the session runs the scores output (Options.Output),
// which must be float32 [batch, n]. Other outputs (an exporter's labels)
// are not computed.
func NewSessionWith(model []byte, o Options) (*Session, error) {
	ins, outs, err := ortgo.GetInputOutputInfoWithONNXData(model)
	if err != nil {
		return nil, fmt.Errorf("%w: inspect model: %w", ErrModel, err)
	}
	inputs, err := inputsOf(ins)
	if err != nil {
		return nil, err
	}
	names := make([]string, len(inputs))
	for i, in := range inputs {
		names[i] = in.name
	}
	// The default rule needs only which outputs are float tensors.
	listed := make([]onnx.Tensor, len(outs))
	for i, out := range outs {
		listed[i] = onnx.Tensor{Name: out.Name, Type: "OTHER"}
		if out.OrtValueType != ortgo.ONNXTypeTensor {
			listed[i].Kind = out.OrtValueType.String()
		} else if out.DataType == ortgo.TensorElementDataTypeFloat {
			listed[i].Type = "FLOAT"
		}
	}
	pick, err := onnx.ScoresOutput(listed, o.Output)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrModel, err)
	}
	var chosen ortgo.InputOutputInfo
	for _, out := range outs {
		if out.Name == pick.Name {
			chosen = out
		}
	}
	dims := chosen.Dimensions
	if pick.Kind != "" || pick.Type != "FLOAT" || len(dims) != 2 || dims[1] < 1 {
		return nil, fmt.Errorf("%w: output %s must be float32 [batch, n], got %s", ErrModel, chosen.Name, &chosen)
	}
	opts, provider, why, err := sessionOptions(o)
	if err != nil {
		return nil, err
	}
	defer opts.Destroy()
	s, err := ortgo.NewDynamicAdvancedSessionWithONNXData(model, names, []string{chosen.Name}, opts)
	if err != nil && provider != "cpu" {
		// The provider loaded but cannot run this model: fall back to cpu.
		why = fmt.Sprintf("%s session failed: %v", provider, err)
		provider = "cpu"
		cpu, cerr := ortgo.NewSessionOptions()
		if cerr != nil {
			return nil, fmt.Errorf("%w: session options: %w", ErrRuntime, cerr)
		}
		defer cpu.Destroy()
		if o.IntraOpThreads > 0 {
			_ = cpu.SetIntraOpNumThreads(o.IntraOpThreads)
		}
		s, err = ortgo.NewDynamicAdvancedSessionWithONNXData(model, names, []string{chosen.Name}, cpu)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: create session: %w", ErrModel, err)
	}
	// Creating the session ran the graph optimisers and kernel lookups
	// once; what inference needs comes back on its first run.
	envMu.Lock()
	releaseCode(envPath)
	envMu.Unlock()
	fast := len(inputs) == 1 && inputs[0].elem == onnxpb.TensorProto_FLOAT
	return &Session{s: s, inputs: inputs, names: names, out: chosen.Name, outPerItem: dims[1], fast: fast, Provider: provider, FallbackReason: why}, nil
}

// sessionOptions asks for the provider; if the library lacks it, the
// options stay cpu-only and why says so.
func sessionOptions(o Options) (*ortgo.SessionOptions, string, string, error) {
	opts, err := ortgo.NewSessionOptions()
	if err != nil {
		return nil, "", "", fmt.Errorf("%w: session options: %w", ErrRuntime, err)
	}
	if o.IntraOpThreads > 0 {
		if err := opts.SetIntraOpNumThreads(o.IntraOpThreads); err != nil {
			opts.Destroy()
			return nil, "", "", fmt.Errorf("%w: threads: %w", ErrRuntime, err)
		}
	}
	var perr error
	switch o.Provider {
	case "", "cpu":
		return opts, "cpu", "", nil
	case "cuda":
		var c *ortgo.CUDAProviderOptions
		if c, perr = ortgo.NewCUDAProviderOptions(); perr == nil {
			perr = opts.AppendExecutionProviderCUDA(c)
			c.Destroy()
		}
	case "tensorrt":
		var t *ortgo.TensorRTProviderOptions
		if t, perr = ortgo.NewTensorRTProviderOptions(); perr == nil {
			perr = opts.AppendExecutionProviderTensorRT(t)
			t.Destroy()
		}
	case "openvino":
		perr = opts.AppendExecutionProviderOpenVINO(map[string]string{})
	default:
		opts.Destroy()
		return nil, "", "", fmt.Errorf("%w: provider %q (one of %v)", ErrModel, o.Provider, Providers)
	}
	if perr != nil {
		return opts, "cpu", fmt.Sprintf("%s unavailable: %v", o.Provider, perr), nil
	}
	return opts, o.Provider, "", nil
}

type tensorPair struct {
	features int64 // GetShape would copy the shape on every call
	in, out  *ortgo.Tensor[float32]
	bind     *ortgo.IoBinding // both tensors bound once, so a run passes no arrays
}

func (tp *tensorPair) destroy() {
	tp.bind.Destroy()
	tp.in.Destroy()
	tp.out.Destroy()
}

// maxCachedShapes bounds the tensors kept for distinct batch sizes.
const maxCachedShapes = 8

// Run infers a batch: x holds rows of `features` values each. Calls are
// serialised: a pipeline owns its session.
func (s *Session) Run(x []float32, features int) ([]float32, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out, err := s.run(x, features)
	if err != nil {
		return nil, err
	}
	return append([]float32(nil), out...), nil
}

// RunShared is Run without the copy of the result: the slice is the
// output tensor's memory, valid until the next call on this session. The
// agent's pipelines, which copy what they keep, use it.
func (s *Session) RunShared(x []float32, features int) ([]float32, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.run(x, features)
}

func (s *Session) run(x []float32, features int) ([]float32, error) {
	if len(s.inputs) != 1 {
		return nil, fmt.Errorf("%w: the graph takes %d inputs (%s); feed them by name", ErrInput, len(s.inputs), strings.Join(s.names, ", "))
	}
	if features < 1 || len(x)%features != 0 {
		return nil, fmt.Errorf("%w: %d values are not rows of %d features", ErrInput, len(x), features)
	}
	if !s.fast {
		// One input of another type (a uint8 image): the feed path converts.
		feed := []onnx.Feed{{Name: s.names[0], Shape: []int64{int64(len(x) / features), int64(features)}, Data: x}}
		return s.runFeeds(feed)
	}
	tp, err := s.pair(int64(len(x)/features), int64(features))
	if err != nil {
		return nil, err
	}
	copy(tp.in.GetData(), x)
	if err := s.s.RunWithBinding(tp.bind); err != nil {
		return nil, fmt.Errorf("%w: run: %w", ErrRuntime, err)
	}
	return tp.out.GetData(), nil
}

func (s *Session) pair(rows, features int64) (*tensorPair, error) {
	if tp, ok := s.tensors[rows]; ok && tp.features == features {
		return tp, nil
	}
	if s.tensors == nil || len(s.tensors) >= maxCachedShapes {
		s.destroyTensors()
		s.tensors = map[int64]*tensorPair{}
	}
	in, err := ortgo.NewEmptyTensor[float32](ortgo.NewShape(rows, features))
	if err != nil {
		return nil, fmt.Errorf("%w: input tensor: %w", ErrInput, err)
	}
	out, err := ortgo.NewEmptyTensor[float32](ortgo.NewShape(rows, s.outPerItem))
	if err != nil {
		in.Destroy()
		return nil, fmt.Errorf("%w: output tensor: %w", ErrRuntime, err)
	}
	bind, err := s.s.CreateIoBinding()
	if err == nil {
		if err = bind.BindInput(s.names[0], in); err == nil {
			err = bind.BindOutput(s.out, out)
		}
		if err != nil {
			bind.Destroy()
		}
	}
	if err != nil {
		in.Destroy()
		out.Destroy()
		return nil, fmt.Errorf("%w: bind tensors: %w", ErrRuntime, err)
	}
	if old, ok := s.tensors[rows]; ok {
		old.destroy()
	}
	tp := &tensorPair{features: features, in: in, out: out, bind: bind}
	s.tensors[rows] = tp
	return tp, nil
}

func (s *Session) destroyTensors() {
	for _, tp := range s.tensors {
		tp.destroy()
	}
}

// Close releases the session and its tensors.
func (s *Session) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.destroyTensors()
	s.tensors = nil
	s.releaseShared()
	return s.s.Destroy()
}

// Optimized returns the graph ONNX Runtime runs for model on the cpu
// provider after its graph optimisers (all levels; threads as o says):
// the session option for an optimised model file path. Tests read it to
// see which kernels a quantized graph fused into.
func Optimized(model []byte, o Options) ([]byte, error) {
	dir, err := os.MkdirTemp("", "outpost-ort-opt")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "optimized.onnx")
	opts, err := ortgo.NewSessionOptions()
	if err != nil {
		return nil, fmt.Errorf("%w: session options: %w", ErrRuntime, err)
	}
	defer opts.Destroy()
	if o.IntraOpThreads > 0 {
		if err := opts.SetIntraOpNumThreads(o.IntraOpThreads); err != nil {
			return nil, fmt.Errorf("%w: threads: %w", ErrRuntime, err)
		}
	}
	if err := opts.SetOptimizedModelFilePath(path); err != nil {
		return nil, fmt.Errorf("%w: optimized model path: %w", ErrRuntime, err)
	}
	ins, outs, err := ortgo.GetInputOutputInfoWithONNXData(model)
	if err != nil {
		return nil, fmt.Errorf("%w: inspect model: %w", ErrModel, err)
	}
	names := func(infos []ortgo.InputOutputInfo) []string {
		var s []string
		for _, i := range infos {
			s = append(s, i.Name)
		}
		return s
	}
	s, err := ortgo.NewDynamicAdvancedSessionWithONNXData(model, names(ins), names(outs), opts)
	if err != nil {
		return nil, fmt.Errorf("%w: create session: %w", ErrModel, err)
	}
	s.Destroy()
	return os.ReadFile(path)
}
