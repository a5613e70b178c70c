package console

import (
	"fmt"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/outpost-edge/outpost/sync/state"
)

// Device statuses the console derives from what the hub knows.
const (
	Online   = "online"
	Offline  = "offline"
	Degraded = "degraded"
	Updating = "updating"
	Revoked  = "revoked"
)

// Statuses in the order the overview lists them.
var Statuses = []string{Online, Updating, Degraded, Offline, Revoked}

// PageSize is the fleet overview's rows per page.
const PageSize = 50

// StatusOf derives a device's status: revoked; offline when it never
// reported, said it was stopping, or is silent past offlineAfter;
// updating while an update is between download and commit; degraded when
// its latest update failed or rolled back, or shows errors or NaN;
// otherwise online.
func StatusOf(d state.Device, now time.Time, offlineAfter time.Duration) string {
	if d.RevokedAt != nil {
		return Revoked
	}
	r := d.Reported
	if r == nil || r.Status != state.StatusRunning || now.Sub(r.ReportedAt) > offlineAfter {
		return Offline
	}
	st := Online
	for _, u := range r.Updates {
		switch {
		case u.Phase == state.PhaseFailed || u.Phase == state.PhaseRolledBack || u.Phase == state.PhaseRollingBack:
			if st == Online {
				st = Degraded
			}
		case !state.Terminal(u.Phase):
			return Updating
		case u.Health.Errors > 0 || u.Health.NaN > 0:
			if st == Online {
				st = Degraded
			}
		}
	}
	return st
}

// Filter selects devices on the overview.
type Filter struct {
	Labels map[string]string // all must match
	Query  string            // a substring of the id
	Status string            // one of Statuses, or ""
}

// ParseFilter reads ?label=k=v&label=...&q=...&status=... .
func ParseFilter(q url.Values) Filter {
	f := Filter{Labels: map[string]string{}, Query: strings.TrimSpace(q.Get("q")), Status: q.Get("status")}
	for _, l := range q["label"] {
		if k, v, ok := strings.Cut(l, "="); ok && k != "" {
			f.Labels[k] = v
		}
	}
	return f
}

// Values writes f back as query parameters.
func (f Filter) Values() url.Values {
	v := url.Values{}
	keys := make([]string, 0, len(f.Labels))
	for k := range f.Labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v.Add("label", k+"="+f.Labels[k])
	}
	if f.Query != "" {
		v.Set("q", f.Query)
	}
	if f.Status != "" {
		v.Set("status", f.Status)
	}
	return v
}

// Row is one device line of the overview.
type Row struct {
	state.Device
	Status string
	Models []string // "pipeline: model vN"
}

// Count is a value and how many devices have it.
type Count struct {
	Key   string
	N     int
	Query string // the overview's URL that filters on it
}

// Overview is the fleet overview page's data.
type Overview struct {
	Total     int // enrolled devices
	Matched   int // after the filter
	ByStatus  []Count
	ByLabel   []Count            // "key=value"
	Versions  map[string][]Count // per pipeline: "model vN"
	Pipelines []string
	Rows      []Row
	Page      int // 1-based
	Pages     int
	Prev      string // URL of the previous page, "" on the first
	Next      string
	Filter    Filter
	Outbox    int64  // records the devices last reported unsent, in all
	Silent    string // the device heard from longest ago, and when
}

// BuildOverview filters, counts and pages devices (sorted by id, as the
// registry lists them). The counts cover the whole fleet; the rows, one
// page of what matches.
func BuildOverview(devs []state.Device, f Filter, page int, now time.Time, offlineAfter time.Duration) Overview {
	o := Overview{Total: len(devs), Filter: f, Versions: map[string][]Count{}}
	status := map[string]int{}
	labels := map[string]int{}
	versions := map[string]map[string]int{}
	var matched []int
	var oldest time.Time
	oldestID := ""
	for i := range devs {
		d := &devs[i]
		st := StatusOf(*d, now, offlineAfter)
		status[st]++
		for k, v := range d.Labels {
			labels[k+"="+v]++
		}
		if r := d.Reported; r != nil {
			for _, m := range r.Models {
				if versions[m.Pipeline] == nil {
					versions[m.Pipeline] = map[string]int{}
				}
				versions[m.Pipeline][fmt.Sprintf("%s v%d", m.Model, m.Version)]++
			}
			if r.Outbox != nil {
				o.Outbox += r.Outbox.Records
			}
			if d.RevokedAt == nil && (oldestID == "" || r.ReportedAt.Before(oldest)) {
				oldest, oldestID = r.ReportedAt, d.ID
			}
		}
		if f.match(d, st) {
			matched = append(matched, i)
		}
	}
	if oldestID != "" {
		o.Silent = fmt.Sprintf("%s, %s ago", oldestID, now.Sub(oldest).Round(time.Second))
	}
	for _, s := range Statuses {
		if status[s] > 0 || s != Revoked {
			g := f
			g.Status = s
			o.ByStatus = append(o.ByStatus, Count{Key: s, N: status[s], Query: "/?" + g.Values().Encode()})
		}
	}
	o.ByLabel = sortedCounts(labels, func(k string) string {
		g := Filter{Labels: map[string]string{}, Query: f.Query, Status: f.Status}
		for lk, lv := range f.Labels {
			g.Labels[lk] = lv
		}
		lk, lv, _ := strings.Cut(k, "=")
		g.Labels[lk] = lv
		return "/?" + g.Values().Encode()
	})
	for p, vs := range versions {
		o.Pipelines = append(o.Pipelines, p)
		o.Versions[p] = sortedCounts(vs, nil)
	}
	sort.Strings(o.Pipelines)
	o.Matched = len(matched)
	o.Pages = max(1, (len(matched)+PageSize-1)/PageSize)
	o.Page = min(max(page, 1), o.Pages)
	start := (o.Page - 1) * PageSize
	for _, i := range matched[start:min(start+PageSize, len(matched))] {
		d := devs[i]
		row := Row{Device: d, Status: StatusOf(d, now, offlineAfter)}
		if d.Reported != nil {
			for _, m := range d.Reported.Models {
				row.Models = append(row.Models, fmt.Sprintf("%s: %s v%d", m.Pipeline, m.Model, m.Version))
			}
		}
		o.Rows = append(o.Rows, row)
	}
	link := func(p int) string {
		v := f.Values()
		v.Set("page", strconv.Itoa(p))
		return "/?" + v.Encode()
	}
	if o.Page > 1 {
		o.Prev = link(o.Page - 1)
	}
	if o.Page < o.Pages {
		o.Next = link(o.Page + 1)
	}
	return o
}

func (f Filter) match(d *state.Device, status string) bool {
	if f.Status != "" && status != f.Status {
		return false
	}
	if f.Query != "" && !strings.Contains(d.ID, f.Query) {
		return false
	}
	for k, v := range f.Labels {
		if d.Labels[k] != v {
			return false
		}
	}
	return true
}

// sortedCounts orders by count, then key.
func sortedCounts(m map[string]int, query func(string) string) []Count {
	out := make([]Count, 0, len(m))
	for k, n := range m {
		c := Count{Key: k, N: n}
		if query != nil {
			c.Query = query(k)
		}
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].N != out[j].N {
			return out[i].N > out[j].N
		}
		return out[i].Key < out[j].Key
	})
	return out
}
