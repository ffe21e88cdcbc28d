package admin

// The reply of every JSON verb is one of these types. The JSON field names are the ones
// v1 clients read (docs/protocol.md, "Admin"); fields marked "ours" are additions a v1
// client ignores. json renders them with the envelope (schema_version, command,
// generated_at_unix_ms) and sorted keys, the bytes v1 clients have always seen.

// StatusReply is STATUS with json set.
type StatusReply struct {
	BrokerInstance  string          `json:"broker_instance"`
	BrokerPID       int             `json:"broker_pid"`
	UptimeSeconds   int64           `json:"uptime_seconds"`
	AcceptingHello  bool            `json:"accepting_hello"`
	ConnectionsOpen int64           `json:"connections_open"`
	FDPressure      FDPressure      `json:"fd_pressure"`
	Backends        []BackendStatus `json:"backends"`
	ConfigReload    *ReloadStatus   `json:"config_reload,omitempty"` // ours
	// Generation, Version, BuildID and Upgrade describe the running image (ours):
	// generation is 0 at first start and +1 per upgrade in place (upgrade.go).
	Generation uint64         `json:"generation"`
	Version    string         `json:"version,omitempty"`
	BuildID    string         `json:"build_id,omitempty"`
	Upgrade    *UpgradeStatus `json:"upgrade,omitempty"`
	// Services is every service of the broker, whichever socket was asked (ours).
	Services []ServiceStatus `json:"services,omitempty"`
}

// FDPressure reports whether fd pressure has demoted the broker (readyz fails).
type FDPressure struct {
	Demoted bool `json:"demoted"`
}

// BackendStatus is one live backend in STATUS.
type BackendStatus struct {
	ServiceName      string `json:"service_name"`
	ServiceVersion   string `json:"service_version"`
	PID              int    `json:"pid"`
	BackendPipe      string `json:"backend_pipe"`
	LastActiveUnixMS int64  `json:"last_active_unix_ms"`
	State            string `json:"state"` // running or exited
	Mode             string `json:"mode"`  // registered or launch
	Instance         string `json:"instance"`
	StartedUnixMS    int64  `json:"started_unix_ms"` // ours
}

// ReloadStatus is the config generation and the last reload (ours).
type ReloadStatus struct {
	Attempts uint64   `json:"attempts"`
	OK       *bool    `json:"ok,omitempty"`
	AtUnixMS int64    `json:"at_unix_ms,omitempty"`
	Plan     []string `json:"plan,omitempty"`
	Error    string   `json:"error,omitempty"`
}

// Service states in ServiceStatus.
const (
	StateServing = "serving" // its socket is bound and accepting
	StateBinding = "binding" // its socket is being bound, or retried after an error
	StateFailed  = "failed"  // it cannot be served; Reason says why
)

// ServiceStatus is one service of the running broker (ours).
type ServiceStatus struct {
	Name     string `json:"name"`
	Mode     string `json:"mode"`
	Socket   string `json:"socket"`
	Instance string `json:"instance"`
	State    string `json:"state"`
	Reason   string `json:"reason,omitempty"`
	// ConnectionsOpen counts control connections open on this service's socket.
	ConnectionsOpen int64 `json:"connections_open"`
	// Hellos and Refusals count answered Hellos since the broker started.
	Hellos   uint64          `json:"hellos"`
	Refusals uint64          `json:"refusals"`
	Backends []BackendStatus `json:"backends"`
}

// ListInstancesReply is LIST_INSTANCES.
type ListInstancesReply struct {
	Instances []Instance `json:"instances"`
}

// Instance is the broker instance behind one control socket.
type Instance struct {
	BrokerInstance string `json:"broker_instance"`
	Pipe           string `json:"pipe"`
	PID            int    `json:"pid"`
	State          string `json:"state"` // ready or draining
}

// BackendHealthReply is BACKEND_HEALTH.
type BackendHealthReply struct {
	ServiceName string          `json:"service_name"`
	Backends    []BackendHealth `json:"backends"`
}

// BackendHealth is one backend, live or down, with the last problem seen for it.
type BackendHealth struct {
	ServiceName     string `json:"service_name"` // ours: v1 names the service once, at the top
	ServiceVersion  string `json:"service_version"`
	PID             int    `json:"pid"`
	State           string `json:"state"` // running, exited, or down (no live process)
	LastHelloUnixMS int64  `json:"last_hello_unix_ms"`
	LastError       string `json:"last_error"`
}

// DumpReply is DUMP.
type DumpReply struct {
	BackendTable          []DumpBackend    `json:"backend_table"`
	SpawnBudgets          []SpawnBudget    `json:"spawn_budgets"`
	RecentLifecycleEvents []LifecycleEvent `json:"recent_lifecycle_events"`
	EffectiveConfig       EffectiveConfig  `json:"effective_config"`
	ConnectionsOpen       int64            `json:"connections_open"`
	HellosInFlight        int64            `json:"hellos_in_flight"`
}

// DumpBackend is one row of DUMP's backend table.
type DumpBackend struct {
	BrokerInstance   string `json:"broker_instance"`
	ServiceName      string `json:"service_name"`
	ServiceVersion   string `json:"service_version"`
	ExeHash          string `json:"exe_hash"`
	PID              int    `json:"pid"`
	BackendPipe      string `json:"backend_pipe"`
	StartedUnixMS    int64  `json:"started_unix_ms"`
	LastActiveUnixMS int64  `json:"last_active_unix_ms"`
	State            string `json:"state"`
	Mode             string `json:"mode"`
}

// SpawnBudget is the spawn budget of one launched key in DUMP.
type SpawnBudget struct {
	BrokerInstance string `json:"broker_instance"`
	ServiceName    string `json:"service_name"`
	ServiceVersion string `json:"service_version"`
	AttemptsUsed   int    `json:"attempts_used"`
	Remaining      int    `json:"remaining"`
	InFlight       bool   `json:"in_flight"`
	RetryAfterMS   uint64 `json:"retry_after_ms"`
}

// LifecycleEvent is one recorded lifecycle event in DUMP: the LifecycleEvent message in
// snake_case, every key present.
type LifecycleEvent struct {
	TsMS           uint64            `json:"ts_ms"`
	PID            uint32            `json:"pid"`
	ServiceName    string            `json:"service_name"`
	Kind           string            `json:"kind"`
	Reason         string            `json:"reason"`
	Extra          map[string]string `json:"extra"`
	SeverityNumber uint32            `json:"severity_number"`
	SeverityText   string            `json:"severity_text"`
	RequestID      string            `json:"request_id"`
	ConnectionID   uint64            `json:"connection_id"`
	BrokerInstance string            `json:"broker_instance"`
}

// ConfigReply is CONFIG.
type ConfigReply struct {
	Values EffectiveConfig `json:"values"`
}

// EffectiveConfig is the configuration in force, every key with where its value came
// from. An empty one renders as {}.
type EffectiveConfig struct {
	Broker   map[string]ConfigValue            `json:"broker,omitempty"`
	Services map[string]map[string]ConfigValue `json:"services,omitempty"`
	Protocol map[string]ConfigValue            `json:"protocol,omitempty"`
}

// ConfigValue is one key's value (a string, number or bool) and its source:
// config-file, default, env:NAME, protocol-v1.
type ConfigValue struct {
	Value  any    `json:"value"`
	Source string `json:"source"`
}

// DiagnoseReply is DIAGNOSE.
type DiagnoseReply struct {
	Bundle Bundle      `json:"bundle"`
	Status StatusReply `json:"status"`
}

// Bundle describes the diagnose bundle and, once written, where.
type Bundle struct {
	Written  bool     `json:"written"`
	Contents []string `json:"contents"`
	Path     string   `json:"path,omitempty"`
	Bytes    int      `json:"bytes,omitempty"`
}

// TextReply is the JSON form the CLI gives a verb whose reply is text (healthz, readyz,
// metrics, shutdown) when asked for --json.
type TextReply struct {
	Command     string `json:"command"`
	ExitCode    uint32 `json:"exit_code"`
	ContentType string `json:"content_type"`
	Body        string `json:"body"`
}
