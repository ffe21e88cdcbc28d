package names

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/zeebo/blake3"
)

// MaxSocketPath is the longest usable Unix socket path (sun_path is 108 bytes with the NUL).
const MaxSocketPath = 107

// Where the v1 machine identity comes from, in order.
var (
	machineIDFiles = []string{"/etc/machine-id", "/var/lib/dbus/machine-id"}
	bootIDFile     = "/proc/sys/kernel/random/boot_id"
)

// UserHash is the v1 per-user hash: the first 8 bytes of BLAKE3("{uid}:{machine_id}") as
// 16 lower-case hex digits.
func UserHash(uid int, machineID string) string {
	sum := blake3.Sum256([]byte(strconv.Itoa(uid) + ":" + machineID))
	return hex.EncodeToString(sum[:8])
}

// MachineID is the v1 machine identity: the first non-empty machine-id file; when none
// exists (minimal containers), "boot:<boot_id>". A machine-id file that exists but cannot
// be read is an error, not a fallback: another process of the same user might read it and
// derive different socket names.
func MachineID() (string, error) { return machineIDFrom(machineIDFiles, bootIDFile) }

func machineIDFrom(files []string, bootID string) (string, error) {
	for _, p := range files {
		b, err := os.ReadFile(p)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			continue
		case err != nil:
			return "", fmt.Errorf("machine id: %w", err)
		}
		if id := strings.TrimSpace(string(b)); id != "" {
			return id, nil
		}
	}
	if b, err := os.ReadFile(bootID); err == nil {
		if id := strings.TrimSpace(string(b)); id != "" {
			return "boot:" + id, nil
		}
	}
	return "", fmt.Errorf("machine id: none of %s exists and %s is unusable", strings.Join(files, ", "), bootID)
}

// Layout derives the v1 socket names for one user on one machine.
type Layout struct {
	Dir string // runtime directory holding the sockets
	SID string // the 16-hex user hash
}

// DefaultRuntimeDir is $XDG_RUNTIME_DIR/running-process/broker when XDG_RUNTIME_DIR is set,
// else /tmp/running-process-{uid}/broker — /tmp literally, not $TMPDIR, so every v1 client
// of the user derives the same path.
func DefaultRuntimeDir(uid int, getenv func(string) string) string {
	if x := getenv("XDG_RUNTIME_DIR"); x != "" {
		return filepath.Join(x, "running-process", "broker")
	}
	return filepath.Join("/tmp", fmt.Sprintf("running-process-%d", uid), "broker")
}

// DefaultLayout builds the layout of the current user from the environment and machine id.
func DefaultLayout(runtimeDir string) (Layout, error) {
	mid, err := MachineID()
	if err != nil {
		return Layout{}, err
	}
	uid := os.Getuid() // v1 hashes the real uid
	if runtimeDir == "" {
		runtimeDir = DefaultRuntimeDir(uid, os.Getenv)
	}
	return Layout{Dir: runtimeDir, SID: UserHash(uid, mid)}, nil
}

// SharedLeaf, ServiceLeaf, InstanceLeaf and BackendLeaf are the four v1 socket leaves.
func (l Layout) SharedLeaf() string                { return "rpb-v1-" + l.SID + "-shared" }
func (l Layout) ServiceLeaf(service string) string { return "rpb-v1-" + l.SID + "-svc-" + service }
func (l Layout) InstanceLeaf(inst string) string   { return "rpb-v1-" + l.SID + "-inst-" + inst }
func (l Layout) BackendLeaf(random32hex string) string {
	return "rpb-v1-" + l.SID + "-be-" + random32hex
}

// Path joins a leaf into a socket path and checks the 108-byte limit.
func (l Layout) Path(leaf string) (string, error) {
	p := filepath.Join(l.Dir, leaf+".sock")
	if err := CheckSocketPath(p); err != nil {
		return "", err
	}
	return p, nil
}

// CheckSocketPath rejects a path too long for sun_path.
func CheckSocketPath(p string) error {
	if len(p) > MaxSocketPath {
		return fmt.Errorf("socket path %s is %d bytes; Unix sockets allow at most %d: choose a shorter runtime_dir", p, len(p), MaxSocketPath)
	}
	return nil
}
