package broker

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"syscall"
	"time"
)

// Store is what the Healer watches and repairs: a *Broker.
type Store interface {
	StoreFaults() []Fault
	ReloadJetStream([]Fault) error
}

// Healer brings the embedded JetStream back after its disk filled up.
// nats-server latches a store's first write error (see Fault), so once a
// full disk made one write fail, the stream refuses every later write even
// when there is room again. The Healer checks the store every Every; a
// fault seen on two checks in a row while the store's filesystem has
// MinFree available is repaired with ReloadJetStream, in process.
type Healer struct {
	Store Store
	// Dir is the JetStream store directory whose filesystem is probed.
	Dir string
	// MinFree is the space the filesystem must have available before the
	// store is reloaded; 0 is the smaller of 16 MiB and a tenth of the
	// filesystem. Reloading with no room would latch again at once (or
	// fail to recover a stream).
	MinFree uint64
	// Every is the check interval (0: 2 s).
	Every time.Duration
	// Free reports the bytes available to the hub and the size of the
	// filesystem holding dir (nil: statfs(2)).
	Free func(dir string) (avail, size uint64, err error)
	// Now is the clock (nil: time.Now).
	Now func() time.Time
	Log *slog.Logger
	// OnHeal, if set, runs after each heal (consumers of the reloaded
	// streams were stopped and recovered: their readers may start over).
	OnHeal func()
	// Heals counts the reloads that cleared every fault.
	Heals atomic.Int64

	since    time.Time // first check that saw the current faults
	lastWait time.Time // last "still short of space" line
}

// DefaultMinFree bounds the free space a reload waits for.
const DefaultMinFree = 16 << 20

// waitLogEvery spaces the lines that say the disk is still full.
const waitLogEvery = 30 * time.Second

// Statfs reports the bytes available to unprivileged users and the size
// of the filesystem holding dir.
func Statfs(dir string) (avail, size uint64, err error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, 0, fmt.Errorf("broker: statfs %s: %w", dir, err)
	}
	return st.Bavail * uint64(st.Bsize), st.Blocks * uint64(st.Bsize), nil
}

// Run checks until ctx ends; a check that fails is logged and tried again
// on the next tick.
func (h *Healer) Run(ctx context.Context) error {
	every := h.Every
	if every <= 0 {
		every = 2 * time.Second
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if _, err := h.Check(); err != nil {
			h.Log.Error("jetstream store not healed; trying again", "err", err, "every", every)
		}
	}
}

func (h *Healer) now() time.Time {
	if h.Now != nil {
		return h.Now()
	}
	return time.Now()
}

// Check runs one check: it reports whether it reloaded the store and that
// cleared every fault. Not safe for concurrent use (Run calls it).
func (h *Healer) Check() (healed bool, err error) {
	faults := h.Store.StoreFaults()
	now := h.now()
	if len(faults) == 0 {
		if !h.since.IsZero() {
			h.Log.Info("jetstream store accepts writes again by itself", "faulty_for", now.Sub(h.since))
			h.since = time.Time{}
		}
		return false, nil
	}
	if h.since.IsZero() {
		// Wait for the next check: a stream being created or deleted can
		// look unrecovered for a moment; a latched write error stays.
		h.since, h.lastWait = now, now
		h.Log.Error("jetstream store refuses writes: a write error is latched until the store is reloaded; reloading once the disk has room",
			"faults", fmt.Sprint(faults), "store_dir", h.Dir)
		return false, nil
	}
	free := h.Free
	if free == nil {
		free = Statfs
	}
	avail, size, err := free(h.Dir)
	if err != nil {
		return false, err
	}
	need := h.MinFree
	if need == 0 {
		need = min(DefaultMinFree, size/10)
	}
	if avail < need {
		if now.Sub(h.lastWait) >= waitLogEvery {
			h.lastWait = now
			h.Log.Warn("jetstream store still short of space; devices keep their data until it has room",
				"available", avail, "need", need, "faulty_for", now.Sub(h.since), "store_dir", h.Dir)
		}
		return false, nil
	}
	h.Log.Warn("jetstream store has room again: reloading it from disk to clear the latched write error",
		"available", avail, "need", need, "faulty_for", now.Sub(h.since), "faults", fmt.Sprint(faults))
	start := time.Now()
	if err := h.Store.ReloadJetStream(faults); err != nil {
		return false, fmt.Errorf("broker: reload jetstream: %w", err)
	}
	if left := h.Store.StoreFaults(); len(left) > 0 {
		return false, fmt.Errorf("broker: jetstream still refuses writes after a reload: %v", left)
	}
	h.Heals.Add(1)
	h.Log.Info("jetstream store healed: writes accepted again", "faulty_for", now.Sub(h.since), "reload_took", time.Since(start), "heals", h.Heals.Load())
	h.since = time.Time{}
	if h.OnHeal != nil {
		h.OnHeal()
	}
	return true, nil
}
