// Package schemas ships the JSON Schemas of the Kafka records the hub
// writes, for cloud teams and for the tests that hold the bridge to them.
package schemas

import (
	"embed"
	_ "embed" // RecordAvro
)

// FS holds record.schema.json, deadletter.schema.json and record.avsc.
//
//go:embed *.schema.json *.avsc
var FS embed.FS

// RecordAvro is the Avro schema of records with bridge.format avro.
//
//go:embed record.avsc
var RecordAvro string
