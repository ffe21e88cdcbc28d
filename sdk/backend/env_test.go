package backend

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/rpbroker/broker/wire"
)

func TestOptionsFromEnv(t *testing.T) {
	full := map[string]string{
		wire.EnvServiceName:    "build-cache",
		wire.EnvServiceVersion: "1.2.3",
		wire.EnvBackendPipe:    "/run/rpb-v1-x-be-y.sock",
		wire.EnvNamespace:      "private:build-cache",
		wire.EnvInstance:       "private:build-cache",
		wire.EnvTraceparent:    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
		wire.EnvTracestate:     "k=v",
		wire.EnvListenerFD:     "3",
		wire.EnvIsDaemon:       "1",
	}
	with := func(kv ...string) map[string]string {
		m := map[string]string{}
		for k, v := range full {
			m[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			if kv[i+1] == "<unset>" {
				delete(m, kv[i])
			} else {
				m[kv[i]] = kv[i+1]
			}
		}
		return m
	}
	cases := []struct {
		name    string
		env     map[string]string
		want    Options
		wantErr string
	}{
		{name: "full launch env", env: full, want: Options{
			Endpoint: "/run/rpb-v1-x-be-y.sock", ListenerFD: 3, ServiceName: "build-cache",
			ServiceVersion: "1.2.3", Namespace: "private:build-cache", Instance: "private:build-cache",
			Traceparent: full[wire.EnvTraceparent], Tracestate: "k=v", IsDaemon: true,
		}},
		{name: "child that binds the pipe itself", env: map[string]string{wire.EnvBackendPipe: "/p.sock"},
			want: Options{Endpoint: "/p.sock"}},
		{name: "fd without pipe", env: map[string]string{wire.EnvListenerFD: "7"}, want: Options{ListenerFD: 7}},
		{name: "is_daemon other than 1", env: with(wire.EnvIsDaemon, "true"), want: func() Options {
			o, _ := optionsFromEnv(lookupIn(full))
			o.IsDaemon = false
			return o
		}()},
		{name: "nothing set", env: map[string]string{}, wantErr: "not launched"},
		{name: "only names set", env: with(wire.EnvBackendPipe, "<unset>", wire.EnvListenerFD, "<unset>"), wantErr: "not launched"},
		{name: "fd not a number", env: with(wire.EnvListenerFD, "three"), wantErr: `RUNNING_PROCESS_BROKER_LISTENER_FD="three"`},
		{name: "fd is stdio", env: with(wire.EnvListenerFD, "2"), wantErr: "above stdio"},
		{name: "fd negative", env: with(wire.EnvListenerFD, "-1"), wantErr: "above stdio"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := optionsFromEnv(lookupIn(tc.env))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				if tc.wantErr == "not launched" && !errors.Is(err, ErrNotLaunched) {
					t.Fatalf("error %v is not ErrNotLaunched", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.OnError != nil {
				t.Fatal("OnError set from the environment")
			}
			got.OnError, tc.want.OnError = nil, nil
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func lookupIn(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}
