package pipeline

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/outpost-edge/outpost/deploy/config"
)

// ActionConfig is one local reaction to a flagged window.
type ActionConfig struct {
	Type    string        `yaml:"type"`    // log, command or mqtt
	Command []string      `yaml:"command"` // command: argv; OUTPOST_* variables describe the alert
	Timeout time.Duration `yaml:"timeout"` // command: limit per run (default 10s)
	URL     string        `yaml:"url"`     // mqtt: the local broker
	Topic   string        `yaml:"topic"`   // mqtt: where alerts are published
}

func (a ActionConfig) validate(path string, errs *config.Errors) {
	switch a.Type {
	case "log":
	case "command":
		if len(a.Command) == 0 {
			errs.Add(path+".command", "must name a program")
		}
	case "mqtt":
		if a.URL == "" || a.Topic == "" {
			errs.Add(path, "mqtt actions need url and topic")
		}
	default:
		errs.Add(path+".type", fmt.Sprintf("must be log, command or mqtt, got %q", a.Type))
	}
}

// actions run the configured reactions without ever blocking the
// pipeline: a command still running when the next alert comes is skipped
// and counted.
type actions struct {
	cfgs    []ActionConfig
	log     *slog.Logger
	mq      map[int]mqtt.Client
	running []atomic.Bool
	Skipped atomic.Int64
}

func newActions(cfgs []ActionConfig, log *slog.Logger) *actions {
	a := &actions{cfgs: cfgs, log: log, mq: map[int]mqtt.Client{}, running: make([]atomic.Bool, len(cfgs))}
	for i, c := range cfgs {
		if c.Type == "mqtt" {
			cl := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(c.URL).SetClientID(fmt.Sprintf("outpost-actions-%d-%d", os.Getpid(), i)).
				SetAutoReconnect(true).SetConnectRetry(true))
			cl.Connect()
			a.mq[i] = cl
		}
	}
	return a
}

func (a *actions) fire(rec InferenceRecord) {
	if a == nil {
		return
	}
	for i, c := range a.cfgs {
		switch c.Type {
		case "log":
			a.log.Warn("model alert", "key", rec.Key, "model", rec.Model, "label", rec.Label, "scores", rec.Scores, "window_end", rec.WindowEnd)
		case "mqtt":
			payload, _ := json.Marshal(rec)
			a.mq[i].Publish(c.Topic, 1, false, payload) // async: paho queues and retries
		case "command":
			if !a.running[i].CompareAndSwap(false, true) {
				a.Skipped.Add(1)
				continue
			}
			go func(i int, c ActionConfig) {
				defer a.running[i].Store(false)
				timeout := c.Timeout
				if timeout <= 0 {
					timeout = 10 * time.Second
				}
				ctx, cancel := context.WithTimeout(context.Background(), timeout)
				defer cancel()
				cmd := exec.CommandContext(ctx, c.Command[0], c.Command[1:]...)
				score := ""
				if len(rec.Scores) > 0 {
					score = strconv.FormatFloat(float64(rec.Scores[0]), 'g', -1, 32)
				}
				cmd.Env = append(os.Environ(), "OUTPOST_PIPELINE="+rec.Pipeline, "OUTPOST_KEY="+rec.Key, "OUTPOST_MODEL="+rec.Model,
					"OUTPOST_LABEL="+rec.Label, "OUTPOST_SCORE="+score, "OUTPOST_WINDOW_END="+rec.WindowEnd.Format(time.RFC3339Nano))
				if out, err := cmd.CombinedOutput(); err != nil {
					a.log.Warn("alert command failed", "command", c.Command[0], "err", err, "output", string(out))
				}
			}(i, c)
		}
	}
}
