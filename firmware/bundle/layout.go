package bundle

// Where a bundle puts things on the device, relative to its root. The
// systemd unit (firmware/build) and the agent's default config use them.
const (
	AgentPath  = "opt/outpost/bin/outpost-agent"
	LibDir     = "opt/outpost/lib"
	ConfigPath = "etc/outpost/agent.yaml"
	RootPath   = "etc/outpost/root.json"
	HubCAPath  = "etc/outpost/hub-ca.pem"
	DeviceEnv  = "etc/outpost/device.env"
	UnitPath   = "etc/systemd/system/outpost-agent.service"
	UnitWants  = "etc/systemd/system/multi-user.target.wants/outpost-agent.service"
	Installed  = "opt/outpost/bundle.json"
	DataDir    = "var/lib/outpost"
	TokenPath  = "var/lib/outpost/enrol.token"
	ModelsDir  = "var/lib/outpost/models"
)
