package client

import (
	"sync"

	"google.golang.org/protobuf/proto"

	"github.com/rpbroker/broker/wire/wirepb"
)

// Cache remembers the Negotiated answer per (socket, service, version) so Connect can dial
// the backend directly. It is safe for concurrent use; the zero value is ready.
type Cache struct {
	mu sync.Mutex
	m  map[cacheKey]*wirepb.Negotiated
}

type cacheKey struct{ socket, service, version string }

func (c *Cache) get(k cacheKey) *wirepb.Negotiated {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n := c.m[k]; n != nil {
		return proto.Clone(n).(*wirepb.Negotiated)
	}
	return nil
}

func (c *Cache) put(k cacheKey, n *wirepb.Negotiated) {
	n = proto.Clone(n).(*wirepb.Negotiated)
	n.HandlePassedToken, n.ConnectionId = nil, 0 // one-time values are never reused
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = make(map[cacheKey]*wirepb.Negotiated)
	}
	c.m[k] = n
}

// forget drops an entry whose endpoint no longer answers.
func (c *Cache) forget(k cacheKey) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, k)
}

// Len is the number of cached endpoints.
func (c *Cache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}
