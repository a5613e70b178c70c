package tuf

import (
	"encoding/json"
	"fmt"

	"github.com/theupdateframework/go-tuf/v2/metadata"
)

// AgentModel is the name under which the agent binary takes part in
// desired state, reported state and rollouts, beside the models: its
// "version" is the build number of a published agent.
const AgentModel = "outpost-agent"

// AgentTarget is the custom metadata of a published agent binary.
type AgentTarget struct {
	Build   int64  `json:"build"`
	Version string `json:"agent_version"`
	Arch    string `json:"arch"`
}

// AgentTargetName is where build of the agent for arch (a Go GOARCH
// name) is published. Each device fetches the one for its architecture.
func AgentTargetName(arch string, build int64) string {
	return fmt.Sprintf("agents/%s/%d", arch, build)
}

// Agent reads a target's agent metadata.
func Agent(tf *metadata.TargetFiles) (AgentTarget, error) {
	var a AgentTarget
	if tf.Custom == nil {
		return a, fmt.Errorf("tuf: target %s has no agent metadata", tf.Path)
	}
	if err := json.Unmarshal(*tf.Custom, &a); err != nil || a.Build < 1 {
		return a, fmt.Errorf("tuf: target %s: agent metadata: %v", tf.Path, err)
	}
	return a, nil
}
