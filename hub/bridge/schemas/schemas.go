// Package schemas ships the JSON Schemas of the Kafka records the hub
// writes, for cloud teams and for the tests that hold the bridge to them.
package schemas

import (
	"embed"
	_ "embed" // RecordAvro
)

// FS holds record.schema.json (the value of every device record, whose
// data it checks against data/{stream}.schema.json by stream),
// deadletter.schema.json (hub dead letters), label.schema.json (labels
// cloud teams write to outpost.labels), data/*.schema.json and
// record.avsc. The JSON Schemas refer to each other by $id.
//
//go:embed *.schema.json data/*.schema.json *.avsc
var FS embed.FS

// RecordAvro is the Avro schema of records with bridge.format avro.
//
//go:embed record.avsc
var RecordAvro string
