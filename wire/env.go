package wire

// Launch-mode environment a broker sets for the backend it starts (v1). The broker
// writes these and the backend SDK reads them, so they live with the protocol.
const (
	EnvServiceName    = "RUNNING_PROCESS_BROKER_V1_SERVICE_NAME"
	EnvServiceVersion = "RUNNING_PROCESS_BROKER_V1_SERVICE_VERSION"
	EnvBackendPipe    = "RUNNING_PROCESS_BROKER_V1_BACKEND_PIPE"
	EnvNamespace      = "RUNNING_PROCESS_BROKER_V1_BACKEND_NAMESPACE"
	EnvInstance       = "RUNNING_PROCESS_BROKER_V1_INSTANCE"
	EnvTraceparent    = "RUNNING_PROCESS_BROKER_V1_TRACEPARENT"
	EnvTracestate     = "RUNNING_PROCESS_BROKER_V1_TRACESTATE"
	EnvListenerFD     = "RUNNING_PROCESS_BROKER_LISTENER_FD"
	EnvIsDaemon       = "RUNNING_PROCESS_IS_DAEMON"
)
