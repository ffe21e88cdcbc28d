package names

// Backend registry instance ids (docs/protocol.md, "Service definitions and version
// policy"): a backend registered in one instance is invisible to another.
const SharedInstance = "shared"

// PrivateInstance is the instance id of a service with private isolation.
func PrivateInstance(service string) string { return "private:" + service }

// ExplicitInstance is the instance id of an explicit instance name.
func ExplicitInstance(name string) string { return "explicit:" + name }
