package broker

import (
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"

	"github.com/nats-io/nats-server/v2/server"
)

// logAdapter routes nats-server's printf logger into the hub's slog logger.
// Errors also go to seen, which notes the file stores that latched a
// write error.
type logAdapter struct {
	l         *slog.Logger
	seen      *latches
	overflows *atomic.Int64 // stream ingest queue full: batches dropped
}

// ingestDropped begins nats-server's warning (stream.queueInbound) when a
// stream's ingest queue is full and it drops what was published.
const ingestDropped = "Dropping messages due to excessive stream ingest rate"

var _ server.Logger = logAdapter{}

func (a logAdapter) Noticef(f string, v ...any) { a.l.Info(fmt.Sprintf(f, v...)) }
func (a logAdapter) Warnf(f string, v ...any) {
	msg := fmt.Sprintf(f, v...)
	if a.overflows != nil && strings.HasPrefix(msg, ingestDropped) {
		a.overflows.Add(1)
		msg += " (devices resend what was dropped; raise broker.stream_buffer or the store's speed)"
	}
	a.l.Warn(msg)
}
func (a logAdapter) Fatalf(f string, v ...any) { a.l.Error(fmt.Sprintf(f, v...), "fatal", true) }
func (a logAdapter) Errorf(f string, v ...any) {
	msg := fmt.Sprintf(f, v...)
	if a.seen != nil {
		a.seen.observe(msg)
	}
	a.l.Error(msg)
}
func (a logAdapter) Debugf(f string, v ...any) { a.l.Debug(fmt.Sprintf(f, v...)) }
func (a logAdapter) Tracef(f string, v ...any) { a.l.Debug(fmt.Sprintf(f, v...), "trace", true) }
