// Package peers runs the agent's MQTT ingest side by side with eKuiper
// (issue 19): one generator publishes JSON readings at QoS 1 for 1,000
// sensor keys to one Mosquitto; each system, pinned to one core, computes a
// 10 s tumbling count, mean and max per sensor in event time. eKuiper
// publishes its results to MQTT; the agent writes them to its outbox and
// uplinks them to a hub, whose Kafka the harness reads. For each rate and
// system the harness reports the CPU per event, the lag behind the
// generator when it stops, the readings lost, and the peak RSS.
//
// Its test carries the build tag peers, so `make test` does not run it:
// `make bench-peers` builds eKuiper, the agent and the hub, and runs it.
package peers
