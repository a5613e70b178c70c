// Package modelstore is the hub's model registry: every version of every
// model package, with its lineage, stage and metrics. Package files live
// in a JetStream object store and the index in a KV bucket, both
// replicated like the rest of the hub's state, so a hub cluster shares
// them and they survive restarts.
package modelstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/outpost-edge/outpost/hub/api"
	"github.com/outpost-edge/outpost/models/goengine"
	"github.com/outpost-edge/outpost/models/manifest"
	"github.com/outpost-edge/outpost/models/onnx"
	"github.com/outpost-edge/outpost/models/validate"
	"github.com/outpost-edge/outpost/sync/topics"
)

// Buckets of the registry.
const (
	ObjectBucket = "OUTPOST_MODELS"
	IndexBucket  = "OUTPOST_MODEL_INDEX"
)

// Stages a version moves through.
const (
	Candidate  = "candidate"
	Canary     = "canary"
	Production = "production"
	Archived   = "archived"
)

var (
	// ErrInvalid means a pushed package is refused.
	ErrInvalid = errors.New("model package refused")
	// ErrNotFound means no such model or version.
	ErrNotFound = errors.New("model not found")
	// ErrConflict means the change contradicts the registry (an old
	// version number, an unknown parent, a stage it cannot enter).
	ErrConflict = errors.New("model registry conflict")
)

// The registry's API types live in hub/api (shared with the CLI and the
// console).
type (
	Version      = api.ModelVersion
	Movement     = api.Movement
	PushRequest  = api.PushRequest
	StageRequest = api.StageRequest
	Summary      = api.ModelSummary
)

// Store is the registry.
type Store struct {
	obj jetstream.ObjectStore
	kv  jetstream.KeyValue
	mu  sync.Mutex // serialises pushes and stage changes on this hub; KV revisions guard the cluster
}

// Open creates (or binds) the buckets.
func Open(ctx context.Context, js jetstream.JetStream, replicas int) (*Store, error) {
	obj, err := js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: ObjectBucket, Replicas: max(replicas, 1), Storage: jetstream.FileStorage})
	if err != nil {
		return nil, fmt.Errorf("modelstore: objects: %w", err)
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: IndexBucket, History: 10, Replicas: max(replicas, 1), Storage: jetstream.FileStorage})
	if err != nil {
		return nil, fmt.Errorf("modelstore: index: %w", err)
	}
	return &Store{obj: obj, kv: kv}, nil
}

func key(name string, version int64) string { return name + "." + strconv.FormatInt(version, 10) }

func objectName(name string, version int64, file string) string {
	return name + "/" + strconv.FormatInt(version, 10) + "/" + file
}

// Push validates a package and registers it as a candidate. The version
// must be above every registered version of the model, and a parent must
// be registered.
func (s *Store) Push(ctx context.Context, manifestJSON, model []byte) (*Version, error) {
	m, err := manifest.Parse(manifestJSON)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if err := topics.ValidDevice(m.Name); err != nil { // same token rules: names become keys
		return nil, fmt.Errorf("%w: name %q may hold only letters, digits, '-' and '_'", ErrInvalid, m.Name)
	}
	if got := manifest.Digest(model); got != m.SHA256 {
		return nil, fmt.Errorf("%w: %w: model.onnx has sha256 %s, manifest says %s", ErrInvalid, manifest.ErrChecksum, got, m.SHA256)
	}
	info, err := onnx.Inspect(model)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if err := validate.Fits(m, info); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	golden := "not checked: the hub's pure-Go engine does not run this graph; the agent checks on load"
	scores, _ := onnx.ScoresOutput(info.Outputs, m.Outputs.Scores) // Fits found it
	if eng, err := goengine.LoadWith(model, goengine.Options{Output: scores.Name}); err == nil {
		if worst, err := m.CheckGolden(validate.Rows(m, info, eng)); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
		} else {
			golden = fmt.Sprintf("reproduced on the pure-Go engine (max abs error %.3g)", worst)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	versions, err := s.versions(ctx, m.Name)
	if err != nil {
		return nil, err
	}
	if n := len(versions); n > 0 && versions[n-1].Version >= m.Version {
		return nil, fmt.Errorf("%w: %s version %d is not above the latest, %d", ErrConflict, m.Name, m.Version, versions[n-1].Version)
	}
	if m.Parent != 0 && !hasVersion(versions, m.Parent) {
		return nil, fmt.Errorf("%w: parent %s v%d is not registered", ErrConflict, m.Name, m.Parent)
	}
	for file, data := range map[string][]byte{manifest.ModelFile: model, manifest.ManifestFile: manifestJSON} {
		if _, err := s.obj.PutBytes(ctx, objectName(m.Name, m.Version, file), data); err != nil {
			return nil, fmt.Errorf("modelstore: store %s: %w", file, err)
		}
	}
	ops := make([]string, 0, len(info.Ops))
	for op := range info.Ops {
		ops = append(ops, op)
	}
	sort.Strings(ops)
	now := time.Now().UTC()
	v := &Version{Name: m.Name, Version: m.Version, Parent: m.Parent, Task: m.Task, Stage: Candidate, Metrics: m.Metrics,
		SHA256: m.SHA256, Size: len(model), Quantization: m.Quantization, Golden: golden, Parameters: info.Parameters, Ops: ops, Created: now,
		History: []Movement{{Stage: Candidate, At: now, Why: "pushed"}}}
	data, _ := json.Marshal(v)
	if _, err := s.kv.Create(ctx, key(m.Name, m.Version), data); err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			return nil, fmt.Errorf("%w: %s v%d was registered meanwhile", ErrConflict, m.Name, m.Version)
		}
		return nil, fmt.Errorf("modelstore: index: %w", err)
	}
	return v, nil
}

func hasVersion(vs []Version, v int64) bool {
	for _, x := range vs {
		if x.Version == v {
			return true
		}
	}
	return false
}

// versions lists a model's versions, oldest first.
func (s *Store) versions(ctx context.Context, name string) ([]Version, error) {
	lister, err := s.kv.ListKeysFiltered(ctx, name+".*")
	if err != nil {
		return nil, fmt.Errorf("modelstore: list: %w", err)
	}
	var out []Version
	for k := range lister.Keys() {
		v, _, err := s.get(ctx, k)
		if err != nil {
			return nil, err
		}
		out = append(out, *v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	return out, nil
}

func (s *Store) get(ctx context.Context, k string) (*Version, uint64, error) {
	e, err := s.kv.Get(ctx, k)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, fmt.Errorf("%w: %s", ErrNotFound, strings.Replace(k, ".", " v", 1))
	}
	if err != nil {
		return nil, 0, fmt.Errorf("modelstore: get %s: %w", k, err)
	}
	var v Version
	if err := json.Unmarshal(e.Value(), &v); err != nil {
		return nil, 0, fmt.Errorf("modelstore: decode %s: %w", k, err)
	}
	return &v, e.Revision(), nil
}

// Versions lists a model's versions, oldest first.
func (s *Store) Versions(ctx context.Context, name string) ([]Version, error) {
	vs, err := s.versions(ctx, name)
	if err == nil && len(vs) == 0 {
		err = fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	return vs, err
}

// List summarises every model, sorted by name.
func (s *Store) List(ctx context.Context) ([]Summary, error) {
	lister, err := s.kv.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("modelstore: list: %w", err)
	}
	byName := map[string]*Summary{}
	for k := range lister.Keys() {
		v, _, err := s.get(ctx, k)
		if err != nil {
			return nil, err
		}
		sm := byName[v.Name]
		if sm == nil {
			sm = &Summary{Name: v.Name}
			byName[v.Name] = sm
		}
		sm.Versions++
		sm.Latest = max(sm.Latest, v.Version)
		switch v.Stage {
		case Production:
			sm.Production = v.Version
		case Canary:
			sm.Canary = v.Version
		}
	}
	out := make([]Summary, 0, len(byName))
	for _, sm := range byName {
		out = append(out, *sm)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Move sets a version's stage. Promoting to production archives the
// previous production version, and to canary demotes the previous canary
// back to candidate: one of each per model. An archived version can only
// be promoted again explicitly, never by accident of another move.
func (s *Store) Move(ctx context.Context, name string, version int64, stage, why string) (*Version, error) {
	switch stage {
	case Candidate, Canary, Production, Archived:
	default:
		return nil, fmt.Errorf("%w: stage %q (candidate, canary, production or archived)", ErrConflict, stage)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	v, _, err := s.get(ctx, key(name, version))
	if err != nil {
		return nil, err
	}
	if v.Stage == stage {
		return v, nil
	}
	if stage == Production || stage == Canary {
		vs, err := s.versions(ctx, name)
		if err != nil {
			return nil, err
		}
		for _, other := range vs {
			if other.Version != version && other.Stage == stage {
				next := Archived
				if stage == Canary {
					next = Candidate
				}
				if _, err := s.set(ctx, other.Name, other.Version, next, fmt.Sprintf("replaced by v%d", version)); err != nil {
					return nil, err
				}
			}
		}
	}
	return s.set(ctx, name, version, stage, why)
}

// set records one stage change; the KV revision guards against a change
// made meanwhile by another hub.
func (s *Store) set(ctx context.Context, name string, version int64, stage, why string) (*Version, error) {
	v, rev, err := s.get(ctx, key(name, version))
	if err != nil {
		return nil, err
	}
	v.Stage = stage
	v.History = append(v.History, Movement{Stage: stage, At: time.Now().UTC(), Why: why})
	data, _ := json.Marshal(v)
	if _, err := s.kv.Update(ctx, key(name, version), data, rev); err != nil {
		return nil, fmt.Errorf("%w: %s v%d changed meanwhile: %w", ErrConflict, name, version, err)
	}
	return v, nil
}

// Package returns a version's manifest.json and model.onnx.
func (s *Store) Package(ctx context.Context, name string, version int64) (manifestJSON, model []byte, err error) {
	if _, _, err := s.get(ctx, key(name, version)); err != nil {
		return nil, nil, err
	}
	if manifestJSON, err = s.obj.GetBytes(ctx, objectName(name, version, manifest.ManifestFile)); err != nil {
		return nil, nil, fmt.Errorf("modelstore: %w", err)
	}
	if model, err = s.obj.GetBytes(ctx, objectName(name, version, manifest.ModelFile)); err != nil {
		return nil, nil, fmt.Errorf("modelstore: %w", err)
	}
	return manifestJSON, model, nil
}
