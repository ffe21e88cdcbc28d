package identity

import (
	"bytes"
	"encoding/hex"
	"errors"
	"strconv"

	"github.com/rpbroker/broker/wire/wirepb"
)

// ErrMismatch matches every *MismatchError. Its text is the v1 wording.
var ErrMismatch = errors.New("endpoint probe response identity did not match expected daemon identity")

// MismatchError names the first identity field that differs; Got and Want are printable
// renderings for logs.
type MismatchError struct {
	Field     string
	Got, Want string
}

func (e *MismatchError) Error() string { return ErrMismatch.Error() + ": " + e.Field }

// Is makes errors.Is(err, ErrMismatch) true.
func (e *MismatchError) Is(target error) bool { return target == ErrMismatch }

// Verify compares got with want field by field in the v1 order (pid, exe_path, exe_hash,
// boot_id, ipc_endpoint) and returns a *MismatchError for the first difference.
func Verify(got, want *wirepb.DaemonProcess) error {
	if got == nil || want == nil {
		return &MismatchError{Field: "identity", Got: present(got), Want: present(want)}
	}
	switch {
	case got.GetPid() != want.GetPid():
		return mismatch("pid", strconv.Itoa(int(got.GetPid())), strconv.Itoa(int(want.GetPid())))
	case got.GetExePath() != want.GetExePath():
		return mismatch("exe_path", got.GetExePath(), want.GetExePath())
	case !bytes.Equal(got.GetExeHash(), want.GetExeHash()):
		return mismatch("exe_hash", hex.EncodeToString(got.GetExeHash()), hex.EncodeToString(want.GetExeHash()))
	case got.GetBootId() != want.GetBootId():
		return mismatch("boot_id", got.GetBootId(), want.GetBootId())
	case got.GetIpcEndpoint().GetPath() != want.GetIpcEndpoint().GetPath():
		return mismatch("ipc_endpoint", got.GetIpcEndpoint().GetPath(), want.GetIpcEndpoint().GetPath())
	}
	return nil
}

func mismatch(field, got, want string) error {
	return &MismatchError{Field: field, Got: got, Want: want}
}

func present(p *wirepb.DaemonProcess) string {
	if p == nil {
		return "<none>"
	}
	return "<present>"
}
