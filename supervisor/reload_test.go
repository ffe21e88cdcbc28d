package supervisor

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/rpbroker/broker/client"
	"github.com/rpbroker/broker/internal/testutil"
	"github.com/rpbroker/broker/wire/wirepb"
)

func adminReq(socket string, verb wirepb.AdminVerb) (*wirepb.AdminReply, error) {
	return client.Admin(context.Background(), socket, &wirepb.AdminRequest{Verb: verb, Json: true})
}

// configView is the part of admin CONFIG the reload tests check.
type configView struct {
	Values struct {
		Broker struct {
			HelloTimeout struct {
				Value string `json:"value"`
			} `json:"hello_timeout"`
		} `json:"broker"`
		Services map[string]json.RawMessage `json:"services"`
	} `json:"values"`
}

// TestAdminDuringReloadStorm: admin verbs over the control socket while the config is
// reloaded again and again. Under -race this fails when a reader touches the config the
// reload is writing; every CONFIG must show one whole config, never a mix of two.
func TestAdminDuringReloadStorm(t *testing.T) {
	e := newEnv(t)
	be, _ := startBackend(t, e.dir)
	keep := registeredService("keep", "1.0.0", be, e.sock("keep"))
	// Two configs that differ in a [broker] key and in the service set together.
	withExtra := func() {
		e.writeConfigWith(`hello_timeout = "1s"`, keep+registeredService("extra", "1.0.0", be, e.sock("extra")))
	}
	without := func() { e.writeConfigWith(`hello_timeout = "2s"`, keep) }
	withExtra()
	r := e.start()
	testutil.WaitFor(t, "keep to negotiate", negotiates(e.sock("keep"), "keep", "1.0.0"))

	var reads atomic.Int64
	errs := make(chan error, 16)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	verbs := []wirepb.AdminVerb{wirepb.AdminVerb_CONFIG, wirepb.AdminVerb_DUMP, wirepb.AdminVerb_STATUS, wirepb.AdminVerb_METRICS}
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ctx.Err() == nil; n++ {
				verb := verbs[(i+n)%len(verbs)]
				reply, err := adminReq(e.sock("keep"), verb)
				if err == nil && verb == wirepb.AdminVerb_CONFIG {
					err = wholeConfig(reply.Body)
				}
				if err != nil {
					select {
					case errs <- fmt.Errorf("%s: %w", verb, err):
					default:
					}
					return
				}
				reads.Add(1)
			}
		}()
	}
	const reloads = 30
	for i := range reloads {
		if i%2 == 0 {
			without()
		} else {
			withExtra()
		}
		if res := r.sup.Reload(context.Background()); res.Err != nil {
			t.Fatalf("reload %d: %v", i, res.Err)
		}
	}
	cancel()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if reads.Load() < reloads {
		t.Errorf("only %d admin replies during %d reloads", reads.Load(), reloads)
	}
	t.Logf("%d admin replies during %d reloads", reads.Load(), reloads)
}

// wholeConfig checks that a CONFIG body is one of the two configs of the storm.
func wholeConfig(body string) error {
	var c configView
	if err := json.Unmarshal([]byte(body), &c); err != nil {
		return fmt.Errorf("decode config: %w", err)
	}
	_, extra := c.Values.Services["extra"]
	ht := c.Values.Broker.HelloTimeout.Value
	if (ht == "1s") != extra || (ht != "1s" && ht != "2s") {
		return fmt.Errorf("half-applied config: hello_timeout %q with extra=%t: %s", ht, extra, strings.TrimSpace(body))
	}
	return nil
}
