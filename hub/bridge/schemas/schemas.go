// Package schemas ships the JSON Schemas of the Kafka records the hub
// writes, for cloud teams and for the tests that hold the bridge to them.
package schemas

import "embed"

// FS holds record.schema.json and deadletter.schema.json.
//
//go:embed *.schema.json
var FS embed.FS
