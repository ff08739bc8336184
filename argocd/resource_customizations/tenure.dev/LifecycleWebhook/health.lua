-- Argo CD health check for tenure.dev/v1alpha1 LifecycleWebhook (see "Argo CD and Flux" in
-- tenure's README). It uses Lua's base and table libraries only, so it runs
-- unchanged from argocd-cm (resource.customizations.health.tenure.dev_LifecycleWebhook).
--
-- Not observed yet, or a spec change not observed yet  Progressing
-- Stalled=True                                        Degraded (its reason and message)
-- Reconciling=True (Delivering a backlog)             Progressing
-- Ready=True, Delivered (nothing waits)               Healthy
-- Ready=False, Suspended (spec.suspend)               Suspended
-- Ready=False, DeliveryFailed or SecretNotFound
--   (events wait; retried with backoff)               Degraded
local hs = {}

-- The status condition of this type, or nil.
local function condition(conditionType)
  if obj.status ~= nil and obj.status.conditions ~= nil then
    for _, c in ipairs(obj.status.conditions) do
      if c.type == conditionType then
        return c
      end
    end
  end
  return nil
end

-- "Reason: message" of a condition.
local function said(c)
  local reason = c.reason or ""
  if c.message ~= nil and c.message ~= "" then
    return reason .. ": " .. c.message
  end
  return reason
end

-- Not yet reconciled, or a spec change tenure has not observed yet.
if obj.status == nil or obj.status.observedGeneration == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for tenure to observe this LifecycleWebhook"
  return hs
end
if obj.metadata.generation ~= nil and obj.status.observedGeneration ~= obj.metadata.generation then
  hs.status = "Progressing"
  hs.message = "Waiting for tenure to observe generation " .. obj.metadata.generation ..
    " (status describes generation " .. obj.status.observedGeneration .. ")"
  return hs
end

-- kstatus conditions: Stalled (an error retrying cannot fix), Reconciling (work under way).
local stalled = condition("Stalled")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = said(stalled)
  return hs
end
local reconciling = condition("Reconciling")
if reconciling ~= nil and reconciling.status == "True" then
  hs.status = "Progressing"
  hs.message = said(reconciling)
  return hs
end

local ready = condition("Ready")
if ready == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for condition Ready"
  return hs
end
if ready.status ~= "True" then
  if ready.reason == "Suspended" then
    hs.status = "Suspended"
  else
    hs.status = "Degraded"
  end
  hs.message = said(ready)
  return hs
end
hs.status = "Healthy"
hs.message = said(ready)
return hs
