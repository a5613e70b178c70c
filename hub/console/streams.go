package console

import (
	"context"
	"net/http"
	"strings"
	"time"
)

// DeadLetter is one record of the dead-letter topic, as the streams page
// lists it.
type DeadLetter struct {
	Time        time.Time
	Device      string
	Subject     string
	Reason      string
	PayloadSize int
}

// DeadLetterRows is how many of the latest dead letters the page lists.
const DeadLetterRows = 20

// Read timeouts of the streams page: the lease is a local KV read, the
// dead letters a Kafka round trip.
const (
	leaseTimeout = time.Second
	deadTimeout  = 3 * time.Second
)

// streamsLive is what the live part of the page shows: the charts and the
// current numbers. GET /streams/charts renders it alone.
type streamsLive struct {
	Charts []Chart
	Rows   []numberRow
	At     time.Time // the latest reading (zero: none yet)
}

// numberRow is one line of the current numbers.
type numberRow struct {
	ID, Name, Total, Rate string
}

// streamsView is the whole page.
type streamsView struct {
	Live streamsLive
	// Holder is the hub holding the pipeline lease ("" none), Self this
	// hub; LeaseErr says why the lease could not be read.
	Holder, Self, LeaseErr string
	Here                   bool
	Dead                   []DeadLetter
	DeadErr                string
	Rows                   int // the most dead letters listed
}

func (c *Console) live() streamsLive {
	var h StreamHistory
	if c.sampler != nil {
		h = c.sampler.History()
	}
	topics := make([]Series, len(h.Topics))
	for i, t := range h.Topics {
		topics[i] = Series{Name: t, Points: h.TopicRates[t]}
	}
	l := streamsLive{At: h.LastAt, Charts: []Chart{
		{ID: "chart-topics", Title: "Records into Kafka per topic", Unit: "/s", Series: topics},
		{ID: "chart-backlog", Title: "JetStream backlog (messages not yet in Kafka)", Series: []Series{{Name: "messages", Points: h.Backlog}}},
		{ID: "chart-backlog-age", Title: "Age of the oldest message not yet in Kafka", Unit: " s", Series: []Series{{Name: "oldest", Points: h.BacklogAge}}},
		{ID: "chart-transactions", Title: "Bridge transactions", Unit: "/s", Series: []Series{{Name: "commits", Points: h.Commits}, {Name: "aborts", Points: h.Aborts}}},
	}}
	n := func(v int64) string { return FormatValue(float64(v)) }
	r := func(ps []Point) string { return FormatValue(LastRate(ps)) + "/s" }
	last := h.Last
	for _, t := range h.Topics {
		l.Rows = append(l.Rows, numberRow{"n-topic-" + t, "records into " + t, n(last.TopicRecords[t]), r(h.TopicRates[t])})
	}
	l.Rows = append(l.Rows,
		numberRow{"n-commits", "transactions committed", n(last.Transactions), r(h.Commits)},
		numberRow{"n-aborts", "transactions aborted", n(last.Aborts), r(h.Aborts)},
		numberRow{"n-dead", "dead letters", n(last.DeadLetters), r(h.Dead)},
		numberRow{"n-backlog", "JetStream backlog (messages)", FormatValue(float64(last.Backlog)), ""},
		numberRow{"n-backlog-age", "oldest message waiting", last.BacklogAge.Round(time.Millisecond).String(), ""},
		numberRow{"n-ingest", "ingest stream", byteString(int64(last.IngestBytes)) + " in " + FormatValue(float64(last.IngestMessages)) + " messages", ""},
	)
	return l
}

func (c *Console) streams(w http.ResponseWriter, r *http.Request, s *Session) {
	v := streamsView{Live: c.live(), Rows: DeadLetterRows}
	ctx, cancel := context.WithTimeout(r.Context(), leaseTimeout)
	holder, self, err := c.b.PipelineLease(ctx)
	cancel()
	v.Holder, v.Self, v.Here = holder, self, holder != "" && holder == self
	if err != nil {
		v.LeaseErr = err.Error()
	}
	ctx, cancel = context.WithTimeout(r.Context(), deadTimeout)
	v.Dead, err = c.b.DeadLetters(ctx, DeadLetterRows)
	cancel()
	if err != nil {
		c.log.Warn("console: dead letters not read", "err", err)
		v.DeadErr = err.Error()
	}
	c.render(w, http.StatusOK, "streams", view{Title: "Streams", Nav: "streams", Session: s, Data: v})
}

// streamCharts is the live part alone, for the page's script to swap in.
func (c *Console) streamCharts(w http.ResponseWriter, _ *http.Request, _ *Session) {
	var b strings.Builder
	if err := c.tmpl["streams"].ExecuteTemplate(&b, "live", c.live()); err != nil {
		c.log.Error("console: render", "page", "streams/charts", "err", err)
		http.Error(w, "render: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_, _ = w.Write([]byte(b.String()))
}
