package ingest

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"time"
)

// SimulatorConfig shapes the built-in sensor simulator.
type SimulatorConfig struct {
	Sensors     int           `yaml:"sensors"`      // number of sensor keys
	Rate        float64       `yaml:"rate"`         // readings per second per sensor
	Noise       float64       `yaml:"noise"`        // relative noise, e.g. 0.05
	AnomalyRate float64       `yaml:"anomaly_rate"` // probability a reading is an anomaly
	DriftAfter  time.Duration `yaml:"drift_after"`  // concept drift starts this long after start (0: never)
	Seed        uint64        `yaml:"seed"`         // fixed seed for repeatable runs (0: random)
	Limit       int           `yaml:"limit"`        // stop after this many readings (0: never)
}

// Simulator emits JSON lines with vibration, temperature and current per
// sensor, anomalies (flagged in the "anomaly" field, a ground-truth label)
// and a drift in the relation between current and vibration.
type Simulator struct {
	cfg SimulatorConfig
	rng *rand.Rand
}

// NewSimulator checks cfg.
func NewSimulator(cfg SimulatorConfig) (*Simulator, error) {
	if cfg.Sensors < 1 || cfg.Rate <= 0 {
		return nil, fmt.Errorf("%w: simulator needs sensors ≥ 1 and rate > 0", ErrConfig)
	}
	seed := cfg.Seed
	if seed == 0 {
		seed = rand.Uint64()
	}
	return &Simulator{cfg: cfg, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}, nil
}

// Run emits readings in real time until ctx ends or Limit is reached.
func (s *Simulator) Run(ctx context.Context, out chan<- Line) error {
	start := time.Now()
	interval := time.Duration(float64(time.Second) / s.cfg.Rate)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	n := 0
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-tick.C:
			for i := 0; i < s.cfg.Sensors; i++ {
				if !send(ctx, out, s.Reading(i, now, now.Sub(start))) {
					return nil
				}
				n++
				if s.cfg.Limit > 0 && n >= s.cfg.Limit {
					return nil
				}
			}
		}
	}
}

// Reading renders one reading of sensor i at time t, elapsed since start.
func (s *Simulator) Reading(i int, t time.Time, elapsed time.Duration) []byte {
	secs := elapsed.Seconds()
	noise := func(scale float64) float64 { return s.rng.NormFloat64() * s.cfg.Noise * scale }
	current := 10 + 2*math.Sin(2*math.Pi*secs/60+float64(i)) + noise(10)
	gain := 0.05
	if s.cfg.DriftAfter > 0 && elapsed >= s.cfg.DriftAfter {
		gain = 0.09 // drift: the same load now shakes the machine harder
	}
	vibration := gain*current + math.Abs(noise(0.5))
	temperature := 40 + 0.8*current + noise(40)
	anomaly := 0
	if s.rng.Float64() < s.cfg.AnomalyRate {
		anomaly = 1
		vibration *= 3 + s.rng.Float64()
		temperature += 15
	}
	b := make([]byte, 0, 160)
	b = append(b, `{"sensor":"sensor-`...)
	b = strconv.AppendInt(b, int64(i), 10)
	b = append(b, `","ts":"`...)
	b = t.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","vibration":`...)
	b = strconv.AppendFloat(b, vibration, 'f', 5, 64)
	b = append(b, `,"temperature":`...)
	b = strconv.AppendFloat(b, temperature, 'f', 3, 64)
	b = append(b, `,"current":`...)
	b = strconv.AppendFloat(b, current, 'f', 3, 64)
	b = append(b, `,"anomaly":`...)
	b = strconv.AppendInt(b, int64(anomaly), 10)
	return append(b, '}')
}
