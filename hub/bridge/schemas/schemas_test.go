package schemas_test

import (
	"encoding/json"
	"io/fs"
	"strconv"
	"strings"
	"testing"

	"github.com/outpost-edge/outpost/hub/bridge/schemas"
	"github.com/outpost-edge/outpost/test/schematest"
)

// TestSchemasCompile: every embedded schema compiles (formats asserted),
// under its $id, and every device stream has a data schema.
func TestSchemasCompile(t *testing.T) {
	s, err := schematest.Compile(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range schematest.Streams {
		if _, err := fs.Stat(schemas.FS, "data/"+st+".schema.json"); err != nil {
			t.Errorf("stream %s: %v", st, err)
		}
	}
	if len(s.Data) != len(schematest.Streams) {
		t.Errorf("data schemas %d, want one per stream (%d)", len(s.Data), len(schematest.Streams))
	}
}

// TestEveryPropertyDescribed: cloud teams read the schemas as the
// reference: every property of every schema has a description.
func TestEveryPropertyDescribed(t *testing.T) {
	names, _ := fs.Glob(schemas.FS, "*.schema.json")
	more, _ := fs.Glob(schemas.FS, "data/*.schema.json")
	for _, name := range append(names, more...) {
		raw, _ := fs.ReadFile(schemas.FS, name)
		var doc any
		if err := json.Unmarshal(raw, &doc); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var walk func(path string, v any)
		walk = func(path string, v any) {
			switch v := v.(type) {
			case map[string]any:
				if props, ok := v["properties"].(map[string]any); ok {
					for p, sub := range props {
						m, _ := sub.(map[string]any)
						if _, ok := m["description"]; !ok && m["$ref"] == nil && !strings.Contains(path, "/if") && !strings.Contains(path, "/then") {
							t.Errorf("%s: %s/properties/%s has no description", name, path, p)
						}
					}
				}
				for k, sub := range v {
					walk(path+"/"+k, sub)
				}
			case []any:
				for i, sub := range v {
					walk(path+"/"+strconv.Itoa(i), sub)
				}
			}
		}
		walk("#", doc)
	}
}

const ts = `"2026-11-25T12:00:05Z"`

func rec(stream, data string) string {
	return `{"device":"pump-7","epoch":"9f3c02a17be4d650","stream":"` + stream + `","seq":1042,"event_time":` + ts + `,"data":` + data + `}`
}

// TestSamples: records like the ones agents and the hub write pass their
// schemas; each broken one fails at the path named.
func TestSamples(t *testing.T) {
	s, err := schematest.Compile(nil)
	if err != nil {
		t.Fatal(err)
	}
	window := `{"pipeline":"machine","key":"sensor-3","start":"2026-11-25T12:00:00Z","end":` + ts + `,"firing":"final","revision":0,"count":50,"fields":{"temp":{"mean":21.5,"p95":23},"vibration.x":{}}}`
	inference := `{"pipeline":"machine","key":"sensor-3","window_start":"2026-11-25T12:00:00Z","window_end":` + ts + `,"firing":"final","model":"bearing","version":4,"scores":[0.93],"label":"anomaly","positive":true,"latency_us":71}`
	frameInf := `{"pipeline":"door","key":"door-1","window_start":` + ts + `,"window_end":` + ts + `,"firing":"frame","model":"door-cnn","version":1,"scores":[0.2,0.8],"label":"open","positive":true,"latency_us":900,"frame":"frame-001.png"}`
	health := `{"kind":"agent_health","uptime_s":12.5,"outbox_depth":3,"outbox_bytes":1200,"heap_bytes":4000000,"goroutines":31}`
	eviction := `{"kind":"outbox_eviction","budget_bytes":1048576,"evicted_records":12,"evicted_bytes":5000,"streams":{"telemetry":{"records":10,"bytes":4000},"dead":{"records":2,"bytes":1000}}}`
	update := `{"kind":"model_update","update":{"model":"bearing","from":3,"to":4,"rollout":"bearing-v4-20261126T101500000","phase":"rolled_back","reason":"12 of 40 rows gave non-finite scores","health":{"inferences":28,"errors":12,"nan":12,"calls":9,"mean_latency_us":71,"baseline_latency_us":66},"at":` + ts + `}}`
	shadow := `{"kind":"model_update","update":{"model":"bearing","from":3,"to":4,"phase":"shadow","health":{"inferences":0,"errors":0,"nan":0,"calls":0,"mean_latency_us":0},"shadow":{"rows":40,"agreement":0.95,"errors":0,"nan":0,"row_latency_us":3.5,"active_row_latency_us":3.1,"split":0.1},"selftest":{"calls":20,"latency_p50_us":40,"latency_p99_us":80,"batch_rows":4,"batch_p50_us":60,"batch_p99_us":90,"rss_growth_mb":-0.5},"at":` + ts + `}}`
	ingest := `{"kind":"ingest_full","stream":"OUTPOST_UP","reason":"the Kafka bridge has not delivered 53 messages","bytes":1041385,"max_bytes":1048576,"messages":53}`
	release := `{"kind":"trainer_release","model":"health","event":{"at":` + ts + `,"kind":"release","version":2,"rollout":"health-v2-x","production_accuracy":0.54,"candidate_accuracy":0.86}}`
	audit := `{"kind":"audit","audit":{"at":` + ts + `,"who":"ops","role":"admin","via":"api","action":"POST /v1/devices","target":"pump-7","result":"ok"}}`
	late := `{"pipeline":"temps","key":"s0","event_time":"2026-11-25T12:00:01Z","values":{"temp":99},"watermark":"2026-11-25T12:00:15Z"}`
	deadLine := `{"pipeline":"temps","reason":"field temp: not a number","line":"{\"temp\":\"warm\"}"}`
	deadFrame := `{"pipeline":"door","key":"door-1","frame":"f.png","reason":"image: unknown format","bytes":4,"data":"AAECAw=="}`
	label := `{"pipeline":"machine","key":"sensor-3","window_start":"2026-11-26T12:00:00Z","label":1}`
	drift := `{"pipeline":"machine","windows":200,"from":"2026-11-25T11:00:00Z","to":` + ts + `,"features":{"temp.mean":{"psi":0.4,"ks_d":0.3,"ks_p":0.001,"drift":true},"prediction":{"psi":0.01,"ks_d":0.05,"ks_p":0.9,"drift":false}},"drifted":["temp.mean"]}`

	good := []string{
		rec("windows", window), rec("inferences", inference), rec("inferences", frameInf), rec("telemetry", health),
		rec("events", eviction), rec("events", update), rec("events", shadow), rec("late", late), rec("dead", deadLine),
		rec("dead", deadFrame), rec("labels", label), rec("drift", drift),
		`{"device":"_hub","stream":"events","seq":1764072005000000000,"event_time":` + ts + `,"data":` + ingest + `}`,
		`{"device":"_hub","stream":"events","seq":1764072005000000001,"event_time":` + ts + `,"data":` + release + `}`,
		`{"device":"_hub","stream":"events","seq":1764072005000000002,"event_time":` + ts + `,"data":` + audit + `}`,
	}
	for _, g := range good {
		if err := s.CheckRecord([]byte(g)); err != nil {
			t.Errorf("good record refused: %v\n%s", err, g)
		}
	}
	bad := []struct{ value, at string }{
		{rec("windows", strings.Replace(window, `"firing":"final"`, `"firing":"late"`, 1)), "/data/firing"},
		{rec("windows", strings.Replace(window, `"count":50,`, ``, 1)), "/data"},
		{rec("windows", strings.Replace(window, `"p95":23`, `"p42":23`, 1)), "/data/fields/temp"},
		{rec("windows", strings.Replace(window, `"mean":21.5`, `"mean":"21.5"`, 1)), "/data/fields/temp/mean"},
		{rec("windows", strings.Replace(window, `"revision":0`, `"revision":0,"samples":[]`, 1)), "/data"},
		{rec("inferences", strings.Replace(inference, `"scores":[0.93]`, `"scores":[]`, 1)), "/data/scores"},
		{rec("inferences", strings.Replace(inference, `"positive":true`, `"positive":"yes"`, 1)), "/data/positive"},
		{rec("inferences", window), "/data"},
		{rec("telemetry", strings.Replace(health, `"goroutines":31`, `"goroutines":-1`, 1)), "/data/goroutines"},
		{rec("telemetry", `{"kind":"cpu"}`), "/data/kind"},
		{rec("events", `{"kind":"reboot"}`), "/data/kind"},
		{rec("events", strings.Replace(eviction, `"telemetry":`, `"metrics":`, 1)), "/data/streams"},
		{rec("events", strings.Replace(update, `"phase":"rolled_back"`, `"phase":"done"`, 1)), "/data/update/phase"},
		{rec("events", strings.Replace(update, `"nan":12,`, ``, 1)), "/data/update/health"},
		{rec("events", strings.Replace(release, `"kind":"release"`, `"kind":"kept"`, 1)), "/data/event/kind"},
		{rec("events", strings.Replace(ingest, `"messages":53`, `"messages":"53"`, 1)), "/data/messages"},
		{rec("events", strings.Replace(audit, `"result":"ok"`, `"result":"ok","token":"x"`, 1)), "/data/audit"},
		{rec("late", strings.Replace(late, `"temp":99`, `"temp":"hot"`, 1)), "/data/values/temp"},
		{rec("late", strings.Replace(late, `"watermark":"2026-11-25T12:00:15Z"`, `"watermark":"soon"`, 1)), "/data/watermark"},
		{rec("dead", `{"pipeline":"temps","line":"x"}`), "/data"},
		{rec("dead", strings.Replace(deadFrame, `"bytes":4`, `"bytes":4,"line":"x"`, 1)), "/data"},
		{rec("labels", strings.Replace(label, `"label":1`, `"label":"anomaly"`, 1)), "/data/label"},
		{rec("drift", strings.Replace(drift, `"ks_p":0.001`, `"ks_p":2`, 1)), "/data/features/temp.mean/ks_p"},
		{rec("drift", strings.Replace(drift, `"temp.mean":{`, `"temp":{`, 1)), "/data/features"},
		{strings.Replace(rec("windows", window), `"stream":"windows"`, `"stream":"metrics"`, 1), "/stream"},
	}
	for _, b := range bad {
		err := s.CheckRecord([]byte(b.value))
		if err == nil {
			t.Errorf("bad record accepted (want a violation at %s):\n%s", b.at, b.value)
			continue
		}
		if !strings.Contains(err.Error(), "'"+b.at+"'") {
			t.Errorf("bad record refused, but not at %s: %v\n%s", b.at, err, b.value)
		}
	}
	// The envelope alone takes any data.
	if err := schematest.Validate(s.Envelope, []byte(rec("windows", `{"i":1,"v":0.5}`))); err != nil {
		t.Errorf("envelope: %v", err)
	}
	if err := schematest.Validate(s.Record, []byte(rec("windows", `{"i":1,"v":0.5}`))); err == nil {
		t.Error("record.schema.json accepted windows data that is no window")
	}
}

// TestCloudLabel: label.schema.json takes what the trainer reads from
// outpost.labels and refuses what it counts as a bad label.
func TestCloudLabel(t *testing.T) {
	s, err := schematest.Compile(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range []string{
		`{"device":"pump-7","pipeline":"machine","key":"sensor-3","window_start":"2026-11-26T12:00:00Z","label":1}`,
		`{"device":"pump-7","pipeline":"machine","key":"sensor-3","event_time":"2026-11-26T12:00:03Z","label":0}`,
	} {
		if err := schematest.Validate(s.Label, []byte(g)); err != nil {
			t.Errorf("good label refused: %v", err)
		}
	}
	for _, b := range []string{
		`{"pipeline":"machine","key":"sensor-3","window_start":"2026-11-26T12:00:00Z","label":1}`,
		`{"device":"pump-7","pipeline":"machine","key":"sensor-3","label":1}`,
		`{"device":"pump-7","pipeline":"machine","key":"sensor-3","window_start":"yesterday","label":1}`,
		`{"hello":"world"}`,
	} {
		if err := schematest.Validate(s.Label, []byte(b)); err == nil {
			t.Errorf("bad label accepted: %s", b)
		}
	}
}
