package tunnel

import "time"

// Status is the tunnel's state as JSON for the node's status page.
type Status struct {
	// Mode is "direct" when a relay reached the node's own port,
	// "relayed" while attached to at least one supernode, else "offline".
	Mode   string `json:"mode"`
	Direct string `json:"direct,omitempty"`
	// DialBack is the last dial-back's outcome: "" (none yet), "ok" or
	// why it failed.
	DialBack string `json:"dial_back,omitempty"`
	// STUN is the last STUN check through a supernode's server.
	STUN       *STUNStatus  `json:"stun,omitempty"`
	Supernodes []LinkStatus `json:"supernodes"`
	LastError  string       `json:"last_error,omitempty"`
}

// STUNStatus is what a STUN check found.
type STUNStatus struct {
	Server string `json:"server"`
	// Reflexive is the address the server saw the node's packets come
	// from; BehindNAT says it is not one of the node's own addresses.
	Reflexive string `json:"reflexive,omitempty"`
	BehindNAT bool   `json:"behind_nat"`
	Error     string `json:"error,omitempty"`
}

// LinkStatus is one supernode's attachment.
type LinkStatus struct {
	ID        string         `json:"id"`
	Attached  bool           `json:"attached"`
	Since     time.Time      `json:"since,omitzero"`
	Ports     map[string]int `json:"ports,omitempty"`
	LastError string         `json:"last_error,omitempty"`
	// TURN is the supernode's STUN/TURN server and when the node's
	// credentials for it expire (the password stays out of the status).
	TURN *TURNStatus `json:"turn,omitempty"`
}

// TURNStatus describes a node's TURN credentials without the password.
type TURNStatus struct {
	URIs    []string  `json:"uris"`
	Expires time.Time `json:"expires"`
}

// Status returns the current state.
func (c *Client) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := Status{Mode: "offline", LastError: c.lastErr, Direct: c.direct}
	for _, ai := range c.order {
		l := c.links[ai.ID]
		ls := LinkStatus{ID: ai.ID.String(), Attached: l.attached, LastError: l.lastErr}
		if l.attached {
			ls.Since, ls.Ports = l.since, l.ports
			st.Mode = "relayed"
			if l.turn != nil {
				ls.TURN = &TURNStatus{URIs: l.turn.URIs, Expires: time.Unix(l.turn.Expires, 0).UTC()}
			}
		}
		st.Supernodes = append(st.Supernodes, ls)
	}
	if c.direct != "" {
		st.Mode = "direct"
	}
	if c.stun.server != "" {
		st.STUN = &STUNStatus{Server: c.stun.server, BehindNAT: c.stun.nat, Error: c.stun.err}
		if c.stun.reflexive.IsValid() {
			st.STUN.Reflexive = c.stun.reflexive.String()
		}
	}
	if c.dbDone {
		st.DialBack = "ok"
		if c.dbErr != "" {
			st.DialBack = c.dbErr
		}
	}
	return st
}
