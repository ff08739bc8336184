-- Argo CD health check for tenure.dev/v1alpha1 DataExport (see "Argo CD and Flux" in
-- tenure's README). It uses Lua's base and table libraries only, so it runs
-- unchanged from argocd-cm (resource.customizations.health.tenure.dev_DataExport).
--
-- Not observed yet, or a spec change not observed yet  Progressing
-- Stalled=True (WrongNamespace, OrganizationPurged)   Degraded (its reason and message)
-- Reconciling=True (exporting), phase Pending/Running Progressing
-- phase Failed                                        Degraded
-- phase Succeeded (also once its ZIP expired, and
--   when Incomplete: the message says without what)   Healthy
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
  hs.message = "Waiting for tenure to observe this DataExport"
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
local phase = obj.status.phase
if phase == "Failed" then
  hs.status = "Degraded"
  if ready ~= nil then
    hs.message = said(ready)
  else
    hs.message = "Failed"
  end
  return hs
end
if phase == "Succeeded" and ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = said(ready)
  return hs
end
hs.status = "Progressing"
if ready ~= nil then
  hs.message = said(ready)
else
  hs.message = tostring(phase or "Pending")
end
return hs
