package hub

import (
	"context"
	"log/slog"
	"time"

	"golang.org/x/sync/errgroup"
)

// supervise runs fn on g until ctx ends, and again a second after each
// time it returns early, logging why. Every long-lived part of the hub
// runs through it (or straight on the hub's group), so that stopping waits
// for all of them and none is left running unseen.
func supervise(ctx context.Context, g *errgroup.Group, log *slog.Logger, name string, fn func(context.Context) error) {
	g.Go(func() error {
		for ctx.Err() == nil {
			err := fn(ctx)
			if ctx.Err() != nil {
				return nil
			}
			if err != nil {
				log.Warn(name+" failed; restarting", "err", err)
			} else {
				log.Warn(name + " returned; restarting")
			}
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
		return nil
	})
}
